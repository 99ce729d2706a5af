#include <framestage/backend.hpp>
#include <framestage/host_backend.hpp>

namespace framestage {

DefaultBackend make_default_backend(int /*device*/) {
  // The CUDA backend is not part of this build yet; the host backend runs everywhere.
  return {std::make_unique<HostBackend>(),
          "the CUDA backend is not built into this version of framestage; using host emulation"};
}

}  // namespace framestage
