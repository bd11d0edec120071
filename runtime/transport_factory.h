#pragma once
// Every transport a process uses, built in one place: UCX or MPI by name, with the WAN emulation
// wrapped around it when asked (runtime/wan_transport.h). The swarm's processes, `sepal ping` and
// the tests build theirs here.
//
// Thread-safety: the functions run on the calling thread; collective ones on every rank of `comm`.

#include <mpi.h>

#include <memory>
#include <string>

#include "runtime/link_auth.h"
#include "runtime/transport_choice.h"

namespace sepal {

/// Collective over `comm`: a transport whose peer ids are the ranks. UCX links get keys from
/// `keys` where given (this rank is then the one deriving them). kInvalidArgument for an unknown
/// name.
Result<std::unique_ptr<Transport>> transport_over_comm(MPI_Comm comm, const TransportChoice& choice,
                                                       LinkKeyAuthority* keys = nullptr);

/// A transport for a process that joins at run time as peer `id` (UCX only: it connects to each
/// member later).
Result<std::unique_ptr<Transport>> transport_for_joiner(PeerId id, const TransportChoice& choice);

}  // namespace sepal
