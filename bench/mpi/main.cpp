// framestage_mpi_stencil: 2-D heat diffusion split into bands of rows across MPI ranks, one
// Coordinator per rank on GPU `local_rank % device_count` (or the host backend). Each tick the
// rows that neighbours need are read back through framestage, swapped with MPI_Sendrecv straight
// out of the pinned readback into pinned upload reservations, and uploaded into the halos
// through framestage; then the step runs. --check compares the result with a single-rank run.
#include "stencil.hpp"
#include "stencil_kernels.hpp"

#include <framestage/coordinator.hpp>
#include <framestage/cuda_backend.hpp>
#include <framestage/error.hpp>
#include <framestage/host_backend.hpp>

#include <mpi.h>

#include "cli_style.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace framestage::mpi_stencil {
namespace {

constexpr int kOk = 0;
constexpr int kMismatch = 1;
constexpr int kUsage = 2;

constexpr const char* kDescription =
    R"(2-D heat diffusion on an NY x NX grid, split into bands of rows, one per MPI rank
(run under mpirun: mpirun -np 2 framestage_mpi_stencil ...). Each rank owns a framestage
Coordinator on GPU (local rank % device count), or on the host backend. Every tick: the band's
first and last rows are read back through framestage, exchanged with the neighbouring ranks by
MPI_Sendrecv, uploaded into the halo rows through framestage, and the step runs on the
coordinator's stream.)";

constexpr const char* kExitStatus =
    "exit status: 0 done (and equal under --check), 1 a mismatch or error, 2 bad usage.";

struct Options {
  std::uint32_t nx = 1024;
  std::uint32_t ny = 1024;
  std::uint32_t ticks = 100;
  std::string backend = "auto";
  bool check = false;
};

// A count of at least `least`, shown as such in --help.
CLI::Validator at_least(std::uint32_t least) {
  return CLI::Range(least, std::numeric_limits<std::uint32_t>::max())
      .description(">= " + std::to_string(least));
}

// The command line, in the framestage program's style (tools/framestage_main.cpp).
void describe_options(CLI::App& app, Options& o) {
  tools::apply_cli_style(app, kExitStatus);
  app.add_option("--nx", o.nx, "columns, at least 3")->check(at_least(3))->capture_default_str();
  app.add_option("--ny", o.ny, "rows, at least one per rank")
      ->check(at_least(1))
      ->capture_default_str();
  app.add_option("--ticks", o.ticks, "steps")->check(at_least(1))->capture_default_str();
  app.add_option("--backend", o.backend, "auto (CUDA if a device is present), cuda or host")
      ->check(CLI::IsMember({"auto", "cuda", "host"}))
      ->capture_default_str();
  app.add_flag("--check", o.check,
               "also run the whole grid on one rank in plain C++ and require equality");
}

void mpi_check(int status, const char* call) {
  if (status != MPI_SUCCESS) {
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(status, text, &length);
    throw std::runtime_error(std::string(call) + " failed: " + std::string(text, length));
  }
}

/// Rank r of `ranks` owns rows [first, first + rows): the remainder goes to the lowest ranks.
Band band_of(const Options& options, int rank, int ranks) {
  const std::uint32_t r = static_cast<std::uint32_t>(rank);
  const std::uint32_t p = static_cast<std::uint32_t>(ranks);
  const std::uint32_t base = options.ny / p;
  const std::uint32_t extra = options.ny % p;
  return Band{options.nx, options.ny, r * base + std::min(r, extra), base + (r < extra ? 1 : 0)};
}

/// The band with its halos at t = 0 (halos beyond the global edge are never read; zero).
std::vector<float> initial_band(const Band& band) {
  std::vector<float> cells(band.cells_with_halos(), 0.0f);
  const std::uint32_t first = band.first_row == 0 ? 1 : 0;
  const std::uint32_t last = band.first_row + band.rows == band.ny ? band.rows : band.rows + 1;
  for (std::uint32_t row = first; row <= last; ++row) {
    for (std::uint32_t x = 0; x < band.nx; ++x) {
      cells[std::size_t{row} * band.nx + x] = initial_value(band.first_row + row - 1, x);
    }
  }
  return cells;
}

/// The single-rank run in plain C++: the whole grid as one band, `ticks` steps.
std::vector<float> single_rank_reference(const Options& options) {
  const Band whole{options.nx, options.ny, 0, options.ny};
  std::vector<float> in = initial_band(whole);
  std::vector<float> out = in;
  for (std::uint32_t t = 0; t < options.ticks; ++t) {
    for (std::uint32_t row = 1; row <= whole.rows; ++row) {
      for (std::uint32_t x = 0; x < whole.nx; ++x) {
        out[std::size_t{row} * whole.nx + x] = next_value(in.data(), whole, row, x);
      }
    }
    std::swap(in, out);
  }
  return {in.begin() + whole.nx, in.end() - whole.nx};
}

struct RankBackend {
  std::unique_ptr<Backend> backend;
  int device = -1;  ///< -1 on the host backend
};

RankBackend make_rank_backend(const std::string& choice, int local_rank) {
  const int devices = cuda_device_count();
  if (choice == "host" || (choice == "auto" && devices == 0)) {
    return {std::make_unique<HostBackend>(), -1};
  }
  if (devices == 0) {
    throw Error(ErrorCategory::cuda, "--backend cuda: no CUDA device is visible to this rank");
  }
#if FRAMESTAGE_HAS_CUDA
  const int device = local_rank % devices;
  return {std::make_unique<CudaBackend>(device), device};
#else
  (void)local_rank;
  throw Error(ErrorCategory::cuda, "--backend cuda: this build has no CUDA backend");
#endif
}

/// The Coordinator's sizes for this example: halo rows per tick, and the initial state in
/// chunks of kInitChunkBytes, one per frame. The default 64 MiB arenas are for far larger frames.
constexpr std::size_t kInitChunkBytes = std::size_t{2} << 20;

Config stencil_config(const Band& band, int device) {
  const std::size_t row_bytes = std::size_t{band.nx} * sizeof(float);
  Config config;
  config.buffering = 3;
  config.device = std::max(device, 0);
  config.arena_bytes = 4096;  // no frame_alloc here
  config.upload_arena_bytes = std::max(kInitChunkBytes, 2 * row_bytes) + (64 << 10);
  config.readback_arena_bytes = 2 * row_bytes + (64 << 10);
  config.max_uploads_per_frame = 64;
  config.max_readbacks_per_frame = 64;
  return config;
}

/// Uploads `cells` into each of `buffers` through the coordinator, at most kInitChunkBytes a
/// frame, and waits for them.
void upload_initial_state(Coordinator& frames, std::span<const float> cells,
                          std::span<float* const> buffers) {
  const std::size_t chunk = kInitChunkBytes / sizeof(float);
  for (float* buffer : buffers) {
    for (std::size_t at = 0; at < cells.size(); at += chunk) {
      frames.begin_frame();
      frames.upload<float>(buffer + at, cells.subspan(at, std::min(chunk, cells.size() - at)));
      (void)frames.end_frame();
    }
  }
  frames.synchronize();
}

struct Run {
  std::vector<float> owned;  ///< the band's rows after the last tick
  double seconds = 0;        ///< the ticks, from the first rank in to the last rank out
};

Run run(const Options& options, const Band& band, Coordinator& frames, StencilKernels& kernels,
        int rank, int ranks) {
  const int above = rank > 0 ? rank - 1 : MPI_PROC_NULL;
  const int below = rank + 1 < ranks ? rank + 1 : MPI_PROC_NULL;
  const std::size_t nx = band.nx;
  const int count = static_cast<int>(nx);

  DeviceBuffer<float> a(frames.backend(), band.cells_with_halos());
  DeviceBuffer<float> b(frames.backend(), band.cells_with_halos());
  const std::vector<float> initial = initial_band(band);
  const std::array<float*, 2> both{a.data(), b.data()};
  upload_initial_state(frames, initial, both);
  float* in = a.data();
  float* out = b.data();

  mpi_check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
  const double start = MPI_Wtime();
  for (std::uint32_t t = 0; t < options.ticks; ++t) {
    // Frame 1: the rows the neighbours need, read after the previous step (which is on the
    // consumer stream before this end_frame).
    frames.begin_frame();
    Readback<float> first_row;
    Readback<float> last_row;
    if (above != MPI_PROC_NULL) first_row = frames.readback<float>(in + nx, nx);
    if (below != MPI_PROC_NULL) last_row = frames.readback<float>(in + band.rows * nx, nx);
    (void)frames.end_frame();

    // Frame 2: the neighbours' rows are received straight into pinned upload space and land in
    // the halos; the step that reads them follows on the ticket's stream. The readbacks stay
    // valid: their slot is not reused before `buffering` (3) frames later.
    frames.begin_frame();
    FrameSpan<float> halo_above;
    FrameSpan<float> halo_below;
    if (above != MPI_PROC_NULL) halo_above = frames.reserve_upload<float>(in, nx);
    if (below != MPI_PROC_NULL)
      halo_below = frames.reserve_upload<float>(in + (band.rows + 1) * nx, nx);
    const float* send_down = below != MPI_PROC_NULL ? last_row.get().data() : nullptr;
    const float* send_up = above != MPI_PROC_NULL ? first_row.get().data() : nullptr;
    // Downward: my last row to the rank below, the rank above's last row into my upper halo.
    mpi_check(MPI_Sendrecv(send_down, send_down ? count : 0, MPI_FLOAT, below, 0, halo_above.data(),
                           above != MPI_PROC_NULL ? count : 0, MPI_FLOAT, above, 0, MPI_COMM_WORLD,
                           MPI_STATUS_IGNORE),
              "MPI_Sendrecv (downward)");
    // Upward: my first row to the rank above, the rank below's first row into my lower halo.
    mpi_check(MPI_Sendrecv(send_up, send_up ? count : 0, MPI_FLOAT, above, 1, halo_below.data(),
                           below != MPI_PROC_NULL ? count : 0, MPI_FLOAT, below, 1, MPI_COMM_WORLD,
                           MPI_STATUS_IGNORE),
              "MPI_Sendrecv (upward)");
    const FrameTicket ticket = frames.end_frame();
    kernels.step(ticket.stream(), in, out);
    std::swap(in, out);
  }
  frames.synchronize();
  const double elapsed = MPI_Wtime() - start;

  Run result;
  mpi_check(MPI_Allreduce(&elapsed, &result.seconds, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD),
            "MPI_Allreduce");
  DeviceBuffer<float>& last = in == a.data() ? a : b;
  std::vector<float> cells = last.to_host();
  result.owned.assign(cells.begin() + static_cast<std::ptrdiff_t>(nx),
                      cells.end() - static_cast<std::ptrdiff_t>(nx));
  return result;
}

/// Gathers every band on rank 0, compares with the single-rank reference there, and tells every
/// rank whether they are equal.
bool check_against_single_rank(const Options& options, const std::vector<float>& owned, int rank,
                               int ranks) {
  std::vector<int> counts(static_cast<std::size_t>(ranks));
  std::vector<int> offsets(static_cast<std::size_t>(ranks));
  for (int r = 0; r < ranks; ++r) {
    const Band band = band_of(options, r, ranks);
    counts[static_cast<std::size_t>(r)] = static_cast<int>(std::size_t{band.rows} * band.nx);
    offsets[static_cast<std::size_t>(r)] = static_cast<int>(std::size_t{band.first_row} * band.nx);
  }
  std::vector<float> grid(rank == 0 ? std::size_t{options.nx} * options.ny : 0);
  mpi_check(MPI_Gatherv(owned.data(), static_cast<int>(owned.size()), MPI_FLOAT, grid.data(),
                        counts.data(), offsets.data(), MPI_FLOAT, 0, MPI_COMM_WORLD),
            "MPI_Gatherv");
  int equal = 1;
  if (rank == 0) {
    const std::vector<float> reference = single_rank_reference(options);
    std::size_t differing = 0;
    double max_difference = 0;
    double checksum = 0;
    for (std::size_t i = 0; i < grid.size(); ++i) {
      checksum += grid[i];
      // Compared as bits: equal values, and the same rounding, or it is a difference.
      if (std::memcmp(&grid[i], &reference[i], sizeof(float)) != 0) {
        ++differing;
        max_difference = std::max(max_difference, std::fabs(double{grid[i]} - reference[i]));
      }
    }
    equal = differing == 0 ? 1 : 0;
    std::printf(
        "check: %s a single-rank run (%zu of %zu cells differ, max |difference| %.3g; tolerance "
        "0: bit for bit); checksum %.9g\n",
        equal ? "equal to" : "DIFFERS from", differing, grid.size(), max_difference, checksum);
  }
  mpi_check(MPI_Bcast(&equal, 1, MPI_INT, 0, MPI_COMM_WORLD), "MPI_Bcast");
  return equal == 1;
}

int run_rank(const Options& options) {
  int rank = 0;
  int ranks = 1;
  mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &rank), "MPI_Comm_rank");
  mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &ranks), "MPI_Comm_size");
  if (options.ny < static_cast<std::uint32_t>(ranks)) {
    if (rank == 0) std::fprintf(stderr, "--ny must be at least the number of ranks (%d)\n", ranks);
    return kUsage;
  }
  // The ranks of this node, numbered from 0: the portable (MPI-3) local rank.
  MPI_Comm node;
  mpi_check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node),
            "MPI_Comm_split_type");
  int local_rank = 0;
  mpi_check(MPI_Comm_rank(node, &local_rank), "MPI_Comm_rank (node)");
  mpi_check(MPI_Comm_free(&node), "MPI_Comm_free");

  const Band band = band_of(options, rank, ranks);
  RankBackend backend = make_rank_backend(options.backend, local_rank);
  Run result;
  {
    Coordinator frames(stencil_config(band, backend.device), *backend.backend);
    const auto kernels = make_stencil_kernels(*backend.backend, band);

    if (rank == 0) {
      std::printf(
          "framestage_mpi_stencil: %d rank(s), grid %u x %u split into bands of rows, %u ticks\n",
          ranks, options.ny, options.nx, options.ticks);
    }
    std::fflush(stdout);
    mpi_check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
    // One line per rank, in rank order.
    for (int r = 0; r < ranks; ++r) {
      if (r == rank) {
        std::printf("rank %d (local %d): rows %u..%u on %s\n", rank, local_rank, band.first_row,
                    band.first_row + band.rows - 1, backend.backend->describe().c_str());
        std::fflush(stdout);
      }
      mpi_check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
    }
    result = run(options, band, frames, *kernels, rank, ranks);
  }
  if (rank == 0) {
    const double cells = static_cast<double>(options.nx) * options.ny * options.ticks;
    std::printf(
        "ticks/s: %.1f (%.3f ms per tick, %.3g cell updates/s; halo readback, "
        "MPI_Sendrecv and upload included)\n",
        options.ticks / result.seconds, 1e3 * result.seconds / options.ticks,
        cells / result.seconds);
  }
  if (options.check && !check_against_single_rank(options, result.owned, rank, ranks)) {
    return kMismatch;
  }
  return kOk;
}

}  // namespace
}  // namespace framestage::mpi_stencil

int main(int argc, char** argv) {
  using namespace framestage::mpi_stencil;
  MPI_Init(&argc, &argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  Options options;
  CLI::App app{kDescription, "framestage_mpi_stencil"};
  describe_options(app, options);
  // Every rank parses the same command line; rank 0 says what was wrong.
  if (const auto status =
          framestage::tools::parse_command_line(app, argc, argv, kUsage, rank != 0)) {
    MPI_Finalize();
    return *status;
  }
  int status = kOk;
  try {
    status = run_rank(options);
  } catch (const std::invalid_argument& e) {
    if (rank == 0) std::fprintf(stderr, "framestage_mpi_stencil: %s\n", e.what());
    status = kUsage;
  } catch (const std::exception& e) {
    // A rank that failed cannot take part in the collectives the others wait in: stop them all.
    std::fprintf(stderr, "framestage_mpi_stencil: rank %d: %s\n", rank, e.what());
    MPI_Abort(MPI_COMM_WORLD, kMismatch);
  }
  MPI_Finalize();
  return status;
}
