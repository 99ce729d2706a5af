/// @file stencil.hpp
/// @brief The MPI example's physics: explicit 2-D heat diffusion (a 5-point Jacobi stencil) on a
/// global ny x nx grid whose edge cells stay fixed, split into bands of whole rows, one per rank.
/// Shared by the CUDA kernel, the host-emulation task and the single-rank reference, so that all
/// three round alike (built without FMA contraction: -fmad=false, -ffp-contract=off).
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define FRAMESTAGE_MPI_HD __host__ __device__
#else
#define FRAMESTAGE_MPI_HD
#endif

namespace framestage::mpi_stencil {

/// Diffusion number; explicit 2-D diffusion is stable up to 0.25.
inline constexpr float kAlpha = 0.2f;

/// @brief One rank's band: `rows` owned rows of `nx` cells, global rows [first_row,
/// first_row + rows) of `ny`, stored with one halo row above and one below:
/// `(rows + 2) * nx` floats, owned row r (0-based) at local row r + 1.
struct Band {
  std::uint32_t nx = 0;
  std::uint32_t ny = 0;
  std::uint32_t first_row = 0;
  std::uint32_t rows = 0;

  [[nodiscard]] FRAMESTAGE_MPI_HD std::size_t cells_with_halos() const {
    return (std::size_t{rows} + 2) * nx;
  }
};

/// @brief The initial temperature of global cell (y, x): a deterministic pattern with detail at
/// every scale, so that a halo row lost or shifted changes the result.
[[nodiscard]] inline float initial_value(std::uint32_t y, std::uint32_t x) {
  return static_cast<float>((std::uint64_t{y} * 131 + std::uint64_t{x} * 71) % 97) / 96.0f;
}

/// @brief The next value of local cell (row, x) of `band` (row 1..rows), reading `in` (the band
/// with its halos): edge cells of the global grid keep their value, the others diffuse.
[[nodiscard]] FRAMESTAGE_MPI_HD inline float next_value(const float* in, const Band& band,
                                                        std::uint32_t row, std::uint32_t x) {
  const std::size_t nx = band.nx;
  const std::size_t i = std::size_t{row} * nx + x;
  const std::uint32_t y = band.first_row + row - 1;
  const float c = in[i];
  if (y == 0 || y == band.ny - 1 || x == 0 || x == band.nx - 1) return c;
  // One fixed order of operations everywhere: the results agree bit for bit.
  const float laplacian = ((in[i - nx] + in[i + nx]) + (in[i - 1] + in[i + 1])) - 4.0f * c;
  return c + kAlpha * laplacian;
}

}  // namespace framestage::mpi_stencil
