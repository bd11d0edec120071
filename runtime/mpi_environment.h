#pragma once
// MPI for the whole process: initialised once with MPI_THREAD_MULTIPLE (transport threads and the
// main thread both call MPI), finalised at exit. Every MPI call in runtime/ goes through
// SEPAL_MPI_STATUS so a failure names the call and MPI's own message.
//
// Thread-safety: mpi_init() may be called from any thread; later calls return the first result.

#include <mpi.h>

#include <cstddef>
#include <span>
#include <vector>

#include "runtime/process_exit.h"
#include "runtime/status.h"

namespace sepal {

/// Initialises MPI (once) with full thread support. kUnavailable when the library cannot give
/// MPI_THREAD_MULTIPLE.
Status mpi_init(int* argc = nullptr, char*** argv = nullptr);

/// Finalises MPI now if it was initialised and is not yet finalised (also done at exit). Should
/// MPI_Finalize wait more than 5 s (for a peer that died), the process ends without it, with the
/// status of set_process_exit_code. mpirun takes a process that ends without it for a failure.
void mpi_finalize_now();

/// True when this process was started without mpirun, srun or a spawning parent (an MPI
/// singleton). After mpi_init.
bool mpi_started_alone();

/// Makes this process end at exit without MPI_Finalize (output flushed, the exit status of
/// set_process_exit_code), once the processes `children_here` (pids on this machine) have ended
/// or 5 s have passed. For a singleton that spawned processes: with Open MPI 4.1 its finalize,
/// once its children had exited, spun in libevent (evmap_delete_all_, closing the TCP BTL's
/// events to them) until the 5 s watchdog ended it, in 3 of 3 runs of 16 prompts through one
/// host. The children finalise, while it waits: one that finalised after the singleton had gone
/// waited 2 s in PMIx_Finalize for the singleton's daemon, and one that skipped it made that
/// daemon print a PMIx error. No mpirun waits for the singleton's verdict.
void mpi_end_without_finalize(std::span<const int> children_here);

/// Status of an MPI return code, naming the call.
Status mpi_status(int rc, const char* call);

/// Collective over `comm`: every rank's `mine` (of any length), in rank order.
Result<std::vector<std::vector<std::byte>>> mpi_allgather_bytes(MPI_Comm comm, std::span<const std::byte> mine);

/// This process's rank and the size of MPI_COMM_WORLD (after mpi_init).
int mpi_world_rank();
int mpi_world_size();

}  // namespace sepal

/// Evaluates an MPI call; returns a Status naming it from the enclosing function on failure.
#define SEPAL_MPI_RETURN_IF_ERROR(call) SEPAL_RETURN_IF_ERROR(::sepal::mpi_status((call), #call))
