#pragma once
// The status the process exits with when something at exit cuts the usual return short: when
// MPI_Finalize waits longer than a few seconds for a dead peer, the process ends with this status
// instead of waiting (runtime/mpi_environment.cc). A program sets it before returning from main.
//
// Thread-safety: thread-safe.

namespace sepal {

/// Default 0.
void set_process_exit_code(int code);

}  // namespace sepal
