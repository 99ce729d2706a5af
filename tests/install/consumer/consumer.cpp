// The C++ API from an installed framestage: upload into a device buffer and read it back.
#include <framestage/framestage.hpp>

#include <cstdio>
#include <vector>

int main() {
  framestage::HostBackend backend;
  framestage::Config config = framestage::Config::from_json(R"({"arena_bytes": 65536})");
  framestage::Coordinator frames(config, backend);
  framestage::DeviceBuffer<int> buffer(backend, 4);
  frames.begin_frame();
  const std::vector<int> values{1, 2, 3, 4};
  frames.upload<int>(buffer.data(), values);
  frames.end_frame().wait();
  if (buffer.to_host() != values) {
    std::puts("consumer_cpp: wrong contents");
    return 1;
  }
  std::puts("consumer_cpp: ok");
  return 0;
}
