#include "runtime/mpi_environment.h"

#include <signal.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <mutex>

namespace sepal {
namespace {

std::atomic<int> g_exit_code{0};
std::atomic<bool> g_singleton{false};         // started without mpirun (nor spawned by a process)
std::atomic<bool> g_without_finalize{false};  // see mpi_end_without_finalize
std::mutex g_children_mutex;
std::vector<pid_t> g_children;  // processes on this machine to wait for at exit

// Waits up to `limit` for every process in `pids` to end (they are not our children: no waitpid).
void wait_for_processes(const std::vector<pid_t>& pids, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (const pid_t pid : pids) {
    while (kill(pid, 0) == 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

void finalize_at_exit() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized && g_without_finalize.load()) {
    std::fflush(nullptr);
    std::vector<pid_t> children;
    {
      std::lock_guard lock(g_children_mutex);
      children = g_children;
    }
    wait_for_processes(children, std::chrono::seconds(5));
    std::_Exit(g_exit_code.load());
  }
  mpi_finalize_now();
}

Status initialise(int* argc, char*** argv) {
  int already = 0;
  MPI_Initialized(&already);
  int provided = 0;
  if (already) {
    MPI_Query_thread(&provided);
  } else {
    // A member that dies must never take the others with it. Under mpirun that is the user's
    // --enable-recovery; a singleton that spawns (generate --hosts, a coordinator adding hosts)
    // starts its own Open MPI daemon at init, which reads this from the environment and would
    // otherwise abort every spawned process when one of them is killed (docs/operations.md).
    setenv("OMPI_MCA_orte_enable_recovery", "1", /*overwrite=*/0);
    // mpirun, srun and a spawning parent all tell their processes who they are before MPI_Init.
    g_singleton = !std::getenv("OMPI_COMM_WORLD_SIZE") && !std::getenv("PMIX_RANK") && !std::getenv("PMI_RANK");
    const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
    if (rc != MPI_SUCCESS) return mpi_status(rc, "MPI_Init_thread");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    // Connect, accept and spawn run on MPI_COMM_SELF: a bad port name must be an error, not an abort.
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    std::atexit(finalize_at_exit);
  }
  if (provided < MPI_THREAD_MULTIPLE) {
    return error(StatusCode::kUnavailable, "the MPI library does not provide MPI_THREAD_MULTIPLE");
  }
  // srun starts every task; when its PMI plugin and the MPI library disagree, each task starts
  // alone as a singleton and the job would run as many separate swarms (measured with Debian's
  // Slurm 22.05 pmix_v4 and Open MPI 4.1: `srun --mpi=pmix`). Refuse rather than do that.
  const char* step_tasks = std::getenv("SLURM_STEP_NUM_TASKS");
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (step_tasks && std::atoi(step_tasks) > 1 && size == 1 && std::getenv("SLURM_PROCID")) {
    return error(StatusCode::kUnavailable, "srun started ", step_tasks,
                 " tasks but MPI sees each alone (srun's --mpi plugin and this MPI library disagree): run mpirun "
                 "inside the allocation instead (docs/operations.md, Slurm)");
  }
  return Status::ok();
}

}  // namespace

void set_process_exit_code(int code) { g_exit_code = code; }

bool mpi_started_alone() { return g_singleton.load(); }

void mpi_end_without_finalize(std::span<const int> children_here) {
  std::lock_guard lock(g_children_mutex);
  g_children.insert(g_children.end(), children_here.begin(), children_here.end());
  g_without_finalize = true;
}

void mpi_finalize_now() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return;
  // MPI_Finalize can wait forever for a rank that was killed (there is no ULFM here): give it a
  // few seconds, then end the process without it (flushing the output first).
  std::thread([] {
    std::this_thread::sleep_for(std::chrono::seconds(5));
    std::fprintf(stderr, "sepal: MPI_Finalize did not return in 5 s; ending without it\n");
    std::fflush(nullptr);
    std::_Exit(g_exit_code.load());
  }).detach();
  MPI_Finalize();
}

Status mpi_init(int* argc, char*** argv) {
  static std::once_flag once;
  static Status result;
  std::call_once(once, [&] { result = initialise(argc, argv); });
  return result;
}

Status mpi_status(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return Status::ok();
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(rc, text, &length);
  return error(StatusCode::kUnavailable, call, " failed: ", std::string(text, static_cast<std::size_t>(length)));
}

Result<std::vector<std::vector<std::byte>>> mpi_allgather_bytes(MPI_Comm comm, std::span<const std::byte> mine) {
  int size = 0;
  MPI_Comm_size(comm, &size);
  int length = static_cast<int>(mine.size());
  std::vector<int> lengths(static_cast<std::size_t>(size)), offsets(static_cast<std::size_t>(size));
  SEPAL_MPI_RETURN_IF_ERROR(MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, comm));
  int total = 0;
  for (int r = 0; r < size; ++r) {
    offsets[r] = total;
    total += lengths[r];
  }
  std::vector<std::byte> all(static_cast<std::size_t>(total));
  SEPAL_MPI_RETURN_IF_ERROR(MPI_Allgatherv(mine.data(), length, MPI_BYTE, all.data(), lengths.data(),
                                           offsets.data(), MPI_BYTE, comm));
  std::vector<std::vector<std::byte>> out(static_cast<std::size_t>(size));
  for (int r = 0; r < size; ++r) out[r].assign(all.begin() + offsets[r], all.begin() + offsets[r] + lengths[r]);
  return out;
}

int mpi_world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int mpi_world_size() {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

}  // namespace sepal
