#pragma once
// Starting processes with MPI_Comm_spawn, written once: `sepal generate --hosts N` and the tests
// that spawn joiners come here. MPI_Comm_spawn has no
// timeout of its own and sometimes hangs with Debian's Open MPI and PMIx (docs/runtime.md), so it
// runs on a thread that is abandoned if it does not return in time.
//
// Thread-safety: call from one thread at a time.

#include <mpi.h>

#include <chrono>
#include <string>
#include <vector>

#include "runtime/status.h"

namespace sepal {

/// Before MPI is initialised in a process that will spawn its own processes on this machine
/// without mpirun (`sepal generate --hosts N` typed in a shell): lets Open MPI place more
/// processes than cores (--oversubscribe), makes waiting ranks yield their core, and, when
/// `loopback_only` (nothing will join from another machine), keeps MPI's TCP on the loopback
/// interface. Each setting is left alone where the environment already sets it.
void prepare_local_spawn_environment(bool loopback_only);

/// Starts `count` processes `command args...` with one MPI_Comm_spawn from MPI_COMM_SELF; the
/// intercommunicator to them. kTimeout when the call has not returned after `timeout` (the stuck
/// call is abandoned), kUnavailable naming MPI's reason when a process could not start.
Result<MPI_Comm> spawn_processes(const std::string& command, const std::vector<std::string>& args, int count,
                                 std::chrono::milliseconds timeout);

/// spawn_processes, then the intercommunicator merged (this process rank 0, the new ones after).
/// When this process is a singleton it will end without MPI_Finalize, after the new ones
/// (mpi_end_without_finalize). The new ones must call merge_with_parent.
Result<MPI_Comm> spawn_and_merge(const std::string& command, const std::vector<std::string>& args, int count,
                                 std::chrono::milliseconds timeout);

/// In a process started by spawn_and_merge: the communicator merged with its parent
/// (kNotFound when this process was not spawned).
Result<MPI_Comm> merge_with_parent();

}  // namespace sepal
