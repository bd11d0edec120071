# Sourced by the scripts that run mpirun on one machine (tests, benchmarks): the settings
# ../shared/HPC-NOTES.md found necessary here. See docs/operations.md.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1   # CI runs as root
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1  # more ranks than cores
export OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo      # loopback only
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}

# Open MPI makes its top session directory, TMP/ompi.NODE.UID, when a job starts, and removes it
# when a job ends and leaves it empty. A job that starts while another ends (or beside another
# starting) can lose that race and die in orte_init: "mkdir ... ompi.vm.0 ... File exists"
# (measured: 4 of 900 staggered `mpirun true` here; CI saw it once). Open MPI deletes its own files
# there but never a folder it did not make, so an empty folder inside holds the directory: 0 of 600.
hold_mpi_session_dir() {
  local top="${OMPI_MCA_orte_tmpdir_base:-${TMPDIR:-${TEMP:-${TMP:-/tmp}}}}/ompi.$(hostname -s).$(id -u)"
  (umask 077 && mkdir -p "$top/sepal-held") 2>/dev/null || true
}
hold_mpi_session_dir
# Killed ranks leave session directories (TOP/pid.PID, with PMIx's shared-memory store inside)
# and vader segments in /dev/shm behind; singletons leave empty TOP/jf.N folders. Only those whose
# owner is gone are removed: tests that do not hold the ctest lock "mpi" start MPI too (a singleton
# `sepal status --join`), and removing a live job's pid.PID made its PMIx server fail with
# OUT-OF-RESOURCE (seen once on CI). A segment is left while any process maps it, and for its
# first 5 s, while its rank may still be mapping it.
clean_mpi_leftovers() {
  local d f now
  for d in /tmp/ompi.*/pid.*; do
    [ -d "$d" ] || continue
    kill -0 "${d##*/pid.}" 2>/dev/null || rm -rf "$d" 2>/dev/null || true
  done
  # A singleton's job-family folder (TOP/jf.N) is left empty when it ends; none is older than 5 s
  # and empty while in use.
  find /tmp/ompi.* -mindepth 1 -maxdepth 1 -name 'jf.*' -type d -empty ! -newermt '5 seconds ago' \
    -exec rmdir {} + 2>/dev/null || true
  now=$(date +%s)
  for f in /dev/shm/vader_segment.*; do
    [ -f "$f" ] && [ $((now - $(stat -c %Z "$f" 2>/dev/null || echo "$now"))) -gt 5 ] || continue
    grep -qsF "$f" /proc/[0-9]*/maps || rm -f "$f" 2>/dev/null || true
  done
  hold_mpi_session_dir
}
# No binding: Open MPI binds each rank to one core by default, which halves a rank's kernel
# threads' compute when it should use every core (measured: 7.2 vs 13.5 tokens/s on the 1.1B shape).
export OMPI_MCA_hwloc_base_binding_policy=none
