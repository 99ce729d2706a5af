// Stage per-tick state once in pinned memory, upload scattered updates, and end the frame.
#include <framestage/framestage.hpp>

#include <cstdio>
#include <vector>

int main() {
  auto [backend, why] = framestage::make_default_backend();
  std::printf("%s (%s)\n", backend->describe().c_str(), why.c_str());

  framestage::Config config;  // triple buffering, 64 MiB pinned arena per slot
  framestage::Coordinator frames(config, *backend);
  framestage::DeviceBuffer<float> velocity(*backend, 1 << 20);  // persistent device state
  // Set once, before any frame: one call, there before the kernels enqueued after it.
  const std::vector<float> masses(4096, 1.0f);
  framestage::DeviceBuffer<float> mass = frames.upload_slice<float>(masses);

  for (int tick = 0; tick < 3; ++tick) {
    frames.begin_frame();
    // Written once, straight into pinned memory; mirrored to the device at end_frame().
    auto positions = frames.frame_alloc<float>(4096);
    for (std::size_t i = 0; i < positions.size(); ++i) {
      positions[i] = float(tick + i);
    }
    frames.stage_for_upload(positions);
    // Small scattered updates into persistent buffers: coalesced into one copy and a scatter.
    const std::vector<float> kick{1.0f, 2.0f, 3.0f};
    frames.upload<float>(velocity.data() + 1000 * tick, kick);
    framestage::FrameTicket ticket = frames.end_frame();
    // Launch kernels on ticket.stream() reading frames.device_ptr(positions), velocity, mass.
    ticket.wait();
  }
  std::printf("%s\n", frames.stats().to_json().c_str());
}
