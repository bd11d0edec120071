#pragma once
// Round-trip latency and bandwidth between two processes over a transport, like ucx_perftest or
// OSU's latency test (what `sepal ping` prints). Two ranks of mpirun (mpi, ucx), or both ends in
// this process (inproc). The echo runs inside the transport's delivery callback, so the numbers
// are the transport's.
//
// Thread-safety: run_ping() from the main thread, once per process.

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "runtime/status.h"
#include "runtime/transport_choice.h"

namespace sepal {

struct PingRow {
  std::size_t bytes = 0;
  double rtt_us = 0;          ///< median round trip
  double bandwidth_gbps = 0;  ///< one-way stream
};

struct PingSettings {
  TransportChoice transport;  ///< name: inproc, mpi or ucx (liveness and authentication apply)
  std::vector<std::size_t> sizes;
  int iterations = 0;  ///< round trips per size (0: by size)
};

/// Measures every size from rank 0 (or in this process for inproc), calling `on_row` as each is
/// done; the other rank echoes until rank 0 is done. Returns the transport's name. kInvalidArgument
/// when mpirun did not launch exactly two ranks (mpi, ucx).
Result<std::string> run_ping(int* argc, char*** argv, const PingSettings& settings,
                             const std::function<void(const std::string& transport, const PingRow& row)>& on_row);

}  // namespace sepal
