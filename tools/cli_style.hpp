// The command-line style of framestage's programs (framestage, framestage_sim,
// framestage_mpi_stencil): CLI11 with one help layout, the exit statuses as the help's footer,
// and one way to end on --help or a bad command line.
#pragma once

#include <CLI/CLI.hpp>

#include <optional>

namespace framestage::tools {

/// Gives `app` the programs' help layout, with `exit_statuses` below the options.
inline void apply_cli_style(CLI::App& app, const char* exit_statuses) {
  app.footer(exit_statuses);
  app.get_formatter()->column_width(34);
}

/// Parses the command line. After --help, or on a bad command line (which CLI11 names, with a
/// pointer to --help), returns the status to exit with: 0 after --help, else `usage_status`;
/// nothing when the program should go on. Under `quiet` it prints nothing (an MPI rank other
/// than 0, say).
inline std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv, int usage_status,
                                             bool quiet = false) {
  try {
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::ParseError& e) {
    const int code = quiet ? e.get_exit_code() : app.exit(e);
    return code == 0 ? 0 : usage_status;
  }
}

}  // namespace framestage::tools
