#pragma once
// Which transport a process uses and how, as plain settings (built by runtime/transport_factory.h).
//
// Thread-safety: a value.

#include <string>

#include "runtime/transport.h"
#include "runtime/wan_link.h"

namespace sepal {

/// Which transport, and how.
struct TransportChoice {
  std::string name = "ucx";  ///< "ucx" or "mpi"
  LivenessOptions liveness;
  bool authenticate = true;  ///< UCX: a MAC on every message (runtime/link_auth.h)
  WanConfig wan;             ///< emulated on every link when enabled
};

}  // namespace sepal
