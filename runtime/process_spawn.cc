#include "runtime/process_spawn.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "runtime/log.h"
#include "runtime/mpi_environment.h"

namespace sepal {
namespace {

// Where a process runs, as spawn_and_merge gathers it.
struct ProcessPlace {
  int pid = 0;
  char host[64] = {};
};

ProcessPlace this_process_place() {
  ProcessPlace p;
  p.pid = static_cast<int>(getpid());
  (void)gethostname(p.host, sizeof p.host - 1);
  return p;
}

}  // namespace

void prepare_local_spawn_environment(bool loopback_only) {
  // Read by the Open MPI daemon a singleton starts at MPI_Init (docs/operations.md).
  setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", /*overwrite=*/0);
  setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
  setenv("OMPI_MCA_hwloc_base_binding_policy", "none", 0);
  if (loopback_only) {
    setenv("OMPI_MCA_btl_tcp_if_include", "lo", 0);
    setenv("OMPI_MCA_oob_tcp_if_include", "lo", 0);
  }
}

Result<MPI_Comm> spawn_processes(const std::string& command, const std::vector<std::string>& args, int count,
                                 std::chrono::milliseconds timeout) {
  SEPAL_RETURN_IF_ERROR(mpi_init());
  // Errors come back as values rather than aborting the process (MPI_COMM_SELF's default).
  MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
  struct Outcome {
    int rc = MPI_SUCCESS;
    int child_error = MPI_SUCCESS;
    MPI_Comm comm = MPI_COMM_NULL;
  };
  auto promise = std::make_shared<std::promise<Outcome>>();
  auto future = promise->get_future();
  std::thread([promise, command, args, count] {
    std::vector<std::string> owned = args;
    std::vector<char*> argv;
    for (auto& a : owned) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<int> errors(static_cast<std::size_t>(count), MPI_SUCCESS);
    Outcome o;
    o.rc = MPI_Comm_spawn(command.c_str(), argv.data(), count, MPI_INFO_NULL, 0, MPI_COMM_SELF, &o.comm, errors.data());
    for (int e : errors) {
      if (o.child_error == MPI_SUCCESS) o.child_error = e;
    }
    promise->set_value(o);
  }).detach();
  if (future.wait_for(timeout) != std::future_status::ready) {
    log(LogLevel::kError, "MPI_Comm_spawn of ", count, " x ", command, " did not return in ", timeout.count(),
        " ms (a known Open MPI/PMIx hang); abandoning it");
    return error(StatusCode::kTimeout, "MPI_Comm_spawn of ", count, " processes did not return in ",
                 timeout.count() / 1000, " s");
  }
  const Outcome o = future.get();
  SEPAL_RETURN_IF_ERROR(mpi_status(o.rc, "MPI_Comm_spawn"));
  SEPAL_RETURN_IF_ERROR(mpi_status(o.child_error, "MPI_Comm_spawn (a process did not start)"));
  return o.comm;
}

Result<MPI_Comm> spawn_and_merge(const std::string& command, const std::vector<std::string>& args, int count,
                                 std::chrono::milliseconds timeout) {
  auto inter = spawn_processes(command, args, count, timeout);
  if (!inter.is_ok()) return inter.status();
  MPI_Comm merged = MPI_COMM_NULL;
  SEPAL_MPI_RETURN_IF_ERROR(MPI_Intercomm_merge(inter.value(), /*high=*/0, &merged));
  // Each child's pid and machine, for a singleton to wait for them at exit.
  std::vector<ProcessPlace> places(static_cast<std::size_t>(count) + 1);
  const ProcessPlace mine = this_process_place();
  SEPAL_MPI_RETURN_IF_ERROR(MPI_Gather(&mine, sizeof mine, MPI_BYTE, places.data(), sizeof mine, MPI_BYTE, 0, merged));
  if (mpi_started_alone()) {
    std::vector<int> here;
    for (std::size_t i = 1; i < places.size(); ++i) {
      if (std::strncmp(places[i].host, mine.host, sizeof mine.host) == 0) here.push_back(places[i].pid);
    }
    mpi_end_without_finalize(here);
  }
  return merged;
}

Result<MPI_Comm> merge_with_parent() {
  SEPAL_RETURN_IF_ERROR(mpi_init());
  MPI_Comm parent = MPI_COMM_NULL;
  MPI_Comm_get_parent(&parent);
  if (parent == MPI_COMM_NULL) return error(StatusCode::kNotFound, "not started by sepal generate --hosts (no parent process)");
  MPI_Comm merged = MPI_COMM_NULL;
  SEPAL_MPI_RETURN_IF_ERROR(MPI_Intercomm_merge(parent, /*high=*/1, &merged));
  const ProcessPlace mine = this_process_place();
  SEPAL_MPI_RETURN_IF_ERROR(MPI_Gather(&mine, sizeof mine, MPI_BYTE, nullptr, 0, MPI_BYTE, 0, merged));
  return merged;
}

}  // namespace sepal
