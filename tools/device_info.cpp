#include "device_info.hpp"

#include <framestage/error.hpp>
#include <framestage/host_backend.hpp>

#if FRAMESTAGE_HAS_CUDA
#include <framestage/cuda_backend.hpp>

#include "runtime/cuda_try.hpp"

#include <cuda_runtime_api.h>
#endif

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

namespace framestage::tools {
namespace {

std::string host_cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) {
        std::string model = line.substr(colon + 1);
        model.erase(0, model.find_first_not_of(' '));
        return model;
      }
    }
  }
  return "unknown";
}

#if FRAMESTAGE_HAS_CUDA
// sysfs files (the PCIe link, the driver version) are read only where a device is.
std::string read_first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::string cuda_version_text(int version) {
  return std::to_string(version / 1000) + "." + std::to_string(version % 1000 / 10);
}

// "32.0 GT/s PCIe" -> 5: the transfer rate of each generation, from Gen1's 2.5 GT/s.
int pcie_generation(const std::string& speed) {
  const double gts = std::atof(speed.c_str());
  constexpr double kRates[] = {2.5, 5.0, 8.0, 16.0, 32.0, 64.0, 128.0};
  for (int i = 0; i < 7; ++i)
    if (gts > 0 && std::abs(gts - kRates[i]) < 0.5) return i + 1;
  return 0;
}

std::optional<PcieLink> pcie_link(int device) {
  char bus_id[32] = {};
  if (cudaDeviceGetPCIBusId(bus_id, sizeof bus_id, device) != cudaSuccess) {
    detail::clear_last_cuda_error();
    return std::nullopt;
  }
  std::string id = bus_id;
  std::transform(id.begin(), id.end(), id.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  // sysfs names the domain with 4 hex digits; some drivers print 8.
  if (const auto colon = id.find(':'); colon == 8 && id.rfind("0000", 0) == 0) id.erase(0, 4);
  const std::string dir = "/sys/bus/pci/devices/" + id + "/";
  PcieLink link;
  link.bus_id = id;
  link.generation = pcie_generation(read_first_line(dir + "current_link_speed"));
  link.width = std::atoi(read_first_line(dir + "current_link_width").c_str());
  link.max_generation = pcie_generation(read_first_line(dir + "max_link_speed"));
  link.max_width = std::atoi(read_first_line(dir + "max_link_width").c_str());
  if (link.width == 0 && link.max_width == 0) return std::nullopt;
  return link;
}
#endif

}  // namespace

nlohmann::ordered_json DeviceInfo::to_json() const {
  nlohmann::ordered_json out;
  out["backend"] = kind == BackendKind::cuda ? "cuda" : "host";
  out["description"] = description;
  out["emulation"] = emulation;
  if (kind == BackendKind::cuda) {
    out["name"] = name;
    out["ordinal"] = ordinal;
    out["compute_capability"] = compute_capability;
    out["sm_count"] = sm_count;
    out["copy_engines"] = copy_engines;
    out["memory_bytes"] = memory_bytes;
    out["cuda_driver_version"] = driver_version;
    out["cuda_runtime_version"] = runtime_version;
    out["kernel_driver"] = kernel_driver;
    if (pcie) {
      out["pcie"] = {{"bus_id", pcie->bus_id},
                     {"generation", pcie->generation},
                     {"width", pcie->width},
                     {"max_generation", pcie->max_generation},
                     {"max_width", pcie->max_width}};
    } else {
      out["pcie"] = nullptr;
    }
  }
  out["host_cpu"] = host_cpu;
  out["host_threads"] = host_threads;
  return out;
}

std::string DeviceInfo::summary() const {
  if (kind != BackendKind::cuda) {
    return description + "; host " + host_cpu + ", " + std::to_string(host_threads) + " threads";
  }
  std::ostringstream out;
  out << name << " (sm_" << compute_capability.substr(0, compute_capability.find('.'))
      << compute_capability.substr(compute_capability.find('.') + 1) << "), " << sm_count
      << " SMs, " << copy_engines << " copy engines, "
      << static_cast<double>(memory_bytes >> 20) / 1024.0 << " GiB, ";
  if (pcie && pcie->generation > 0) {
    out << "PCIe Gen" << pcie->generation << " x" << pcie->width;
    if (pcie->max_generation != pcie->generation || pcie->max_width != pcie->width)
      out << " (max Gen" << pcie->max_generation << " x" << pcie->max_width << ")";
  } else {
    out << "PCIe link unknown";
  }
  out << ", CUDA runtime " << runtime_version << ", driver supports " << driver_version;
  return out.str();
}

DeviceInfo describe_device(Backend& backend) {
  DeviceInfo info;
  info.kind = backend.kind();
  info.description = backend.describe();
  info.emulation = backend.kind() != BackendKind::cuda;
  info.host_cpu = host_cpu_model();
  info.host_threads = std::thread::hardware_concurrency();
#if FRAMESTAGE_HAS_CUDA
  if (auto* cuda = dynamic_cast<CudaBackend*>(&backend)) {
    const int device = cuda->device();
    cudaDeviceProp properties{};
    FRAMESTAGE_CUDA_TRY(cudaGetDeviceProperties(&properties, device));
    info.name = properties.name;
    info.ordinal = device;
    info.compute_capability =
        std::to_string(properties.major) + "." + std::to_string(properties.minor);
    info.sm_count = properties.multiProcessorCount;
    info.copy_engines = properties.asyncEngineCount;
    info.memory_bytes = properties.totalGlobalMem;
    int driver = 0;
    int runtime = 0;
    FRAMESTAGE_CUDA_TRY(cudaDriverGetVersion(&driver));
    FRAMESTAGE_CUDA_TRY(cudaRuntimeGetVersion(&runtime));
    info.driver_version = cuda_version_text(driver);
    info.runtime_version = cuda_version_text(runtime);
    info.pcie = pcie_link(device);
    info.kernel_driver = read_first_line("/sys/module/nvidia/version");
  }
#endif
  return info;
}

OpenedBackend open_backend(std::string_view which, int device) {
  if (which == "host") {
    return {std::make_unique<HostBackend>(), "host emulation asked for (--backend host)"};
  }
  if (which == "cuda") {
#if FRAMESTAGE_HAS_CUDA
    if (auto why = CudaBackend::unavailable_reason(device)) {
      throw Error(ErrorCategory::cuda, "the CUDA backend is needed, but " + *why);
    }
    auto cuda = std::make_unique<CudaBackend>(device);
    std::string reason = cuda->describe();
    return {std::move(cuda), std::move(reason)};
#else
    throw Error(ErrorCategory::cuda,
                "the CUDA backend is needed, but this build of framestage has none (no nvcc at "
                "configure time)");
#endif
  }
  auto [backend, reason] = make_default_backend(device);
  return {std::move(backend), std::move(reason)};
}

}  // namespace framestage::tools
