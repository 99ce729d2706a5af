// A CUDA code using an installed framestage: a .cu file that includes the umbrella header, in a
// project that says only find_package(framestage) and target_link_libraries (no -std flag of
// its own: the package gives nvcc C++20). It needs no device: make_default_backend() falls back
// to the host backend, and the kernel runs only on a GPU.
#include <framestage/framestage.hpp>

#include <cstdio>
#include <vector>

static_assert(__cplusplus >= 202002L, "framestage::framestage gives nvcc C++20");

__global__ void scale_kernel(float* values, std::size_t count, float factor) {
  const std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x;
  if (i < count) values[i] *= factor;
}

int main() {
  auto [backend, why] = framestage::make_default_backend();
  std::printf("consumer_cuda: %s (%s)\n", backend->describe().c_str(), why.c_str());
  framestage::Config config = framestage::Config::from_json(R"({"arena_bytes": 65536})");
  framestage::Coordinator frames(config, *backend);

  const std::vector<float> initial{1.0f, 2.0f, 3.0f, 4.0f};
  framestage::DeviceBuffer<float> state = frames.upload_slice<float>(initial);  // no frame open
  frames.begin_frame();
  const std::vector<float> update{10.0f, 20.0f};
  frames.upload<float>(state.data() + 2, update);
  framestage::FrameTicket ticket = frames.end_frame();
  std::vector<float> want{1.0f, 2.0f, 10.0f, 20.0f};
  if (backend->kind() == framestage::BackendKind::cuda) {
    scale_kernel<<<1, 32, 0, static_cast<cudaStream_t>(ticket.stream().native())>>>(
        state.data(), state.size(), 2.0f);
    for (float& v : want)
      v *= 2.0f;
  }
  frames.synchronize();
  if (state.to_host() != want) {
    std::puts("consumer_cuda: wrong contents");
    return 1;
  }
  std::puts("consumer_cuda: ok");
  return 0;
}
