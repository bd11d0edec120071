#include "runtime/transport_factory.h"

#include "runtime/mpi_transport.h"
#include "runtime/ucx_transport.h"
#include "runtime/wan_transport.h"

namespace sepal {
namespace {

std::unique_ptr<Transport> wrap(std::unique_ptr<Transport> t, const WanConfig& wan) {
  if (wan.enabled()) return std::make_unique<WanTransport>(std::move(t), wan);
  return t;
}

}  // namespace

Result<std::unique_ptr<Transport>> transport_over_comm(MPI_Comm comm, const TransportChoice& choice,
                                                       LinkKeyAuthority* keys) {
  if (choice.name == "mpi") {
    auto t = MpiTransport::create(comm, choice.liveness);
    if (!t.is_ok()) return t.status();
    return wrap(std::move(t).value(), choice.wan);
  }
  if (choice.name == "ucx") {
    auto t = UcxTransport::create_over_mpi(comm, UcxOptions{choice.liveness, choice.authenticate}, keys);
    if (!t.is_ok()) return t.status();
    return wrap(std::move(t).value(), choice.wan);
  }
  return error(StatusCode::kInvalidArgument, "no transport named '", choice.name, "' (ucx or mpi)");
}

Result<std::unique_ptr<Transport>> transport_for_joiner(PeerId id, const TransportChoice& choice) {
  if (choice.name != "ucx") {
    return error(StatusCode::kInvalidArgument, "joining a running swarm needs the ucx transport, not '", choice.name, "'");
  }
  auto t = UcxTransport::create(id, UcxOptions{choice.liveness, choice.authenticate});
  if (!t.is_ok()) return t.status();
  return wrap(std::move(t).value(), choice.wan);
}

}  // namespace sepal
