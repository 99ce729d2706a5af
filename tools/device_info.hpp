// The backend the program runs on, and what it knows about the device and host under it.
#pragma once

#include <framestage/backend.hpp>

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace framestage::tools {

/// @brief The PCIe link of a GPU, as Linux reports it in sysfs.
struct PcieLink {
  std::string bus_id;  ///< "0000:3b:00.0"
  int generation = 0;  ///< current link; a GPU at idle may run its link slower
  int width = 0;
  int max_generation = 0;
  int max_width = 0;
};

/// @brief Everything `probe` and `bench` report about where they ran.
struct DeviceInfo {
  BackendKind kind = BackendKind::host;
  std::string description;  ///< the backend's describe()
  bool emulation = true;    ///< true on the host backend: no figure is a GPU figure
  // CUDA backend only.
  std::string name;
  int ordinal = -1;
  std::string compute_capability;  ///< "9.0"
  int sm_count = 0;
  int copy_engines = 0;  ///< cudaDeviceProp::asyncEngineCount
  std::size_t memory_bytes = 0;
  std::string driver_version;   ///< the newest CUDA the driver supports, "13.0"
  std::string runtime_version;  ///< the CUDA runtime linked in, "13.0"
  std::string kernel_driver;    ///< the NVIDIA kernel module's version, "580.159.04", if known
  std::optional<PcieLink> pcie;
  // The host, on either backend (GPU figures depend on it too).
  std::string host_cpu;
  unsigned host_threads = 0;

  [[nodiscard]] nlohmann::ordered_json to_json() const;
  /// @brief One line: "NVIDIA H100 80GB HBM3 (sm_90), 132 SMs, 3 copy engines, PCIe Gen5 x16".
  [[nodiscard]] std::string summary() const;
};

/// @brief Queries the device behind `backend` (nothing is measured).
[[nodiscard]] DeviceInfo describe_device(Backend& backend);

/// @brief A backend chosen on the command line, and why.
struct OpenedBackend {
  std::unique_ptr<Backend> backend;
  std::string reason;
};

/// @brief "auto" (CUDA when a device is present, else host), "cuda" or "host".
/// @throws Error(cuda) if "cuda" is asked for and no CUDA device `device` can be used.
[[nodiscard]] OpenedBackend open_backend(std::string_view which, int device);

/// @brief The line every report starts with on the host backend.
inline constexpr std::string_view kHostEmulationNote =
    "HOST EMULATION (no GPU): the 'device' is host memory and every time is a host memcpy "
    "time; these are not GPU figures";

}  // namespace framestage::tools
