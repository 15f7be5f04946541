#include "recovery/application_seats.hpp"

#include <sys/eventfd.h>

namespace flotilla::recovery {

Result<std::unique_ptr<ApplicationSeats>> ApplicationSeats::attach(Supervisor& supervisor) {
  std::unique_ptr<ApplicationSeats> seats(new ApplicationSeats(supervisor));
  const auto& components = supervisor.config().components;
  for (std::size_t i = 0; i < components.size(); ++i) {
    if (!components[i].external) continue;
    UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake.valid()) return Error::from_errno("eventfd");
    const auto id = static_cast<ComponentId>(i + 1);
    supervisor.set_wake_fd(id, wake.get());
    seats->seats_.push_back(Seat{id, components[i].name, std::move(wake)});
  }
  supervisor.add_observer(*seats);
  return seats;
}

ApplicationSeats::~ApplicationSeats() { supervisor_.remove_observer(*this); }

ApplicationSeats::Seat* ApplicationSeats::find(std::string_view name) {
  for (Seat& seat : seats_) {
    if (seat.name == name) return &seat;
  }
  return nullptr;
}

Result<Lease> ApplicationSeats::lease(pid_t holder) {
  for (Seat& seat : seats_) {
    if (seat.leased || supervisor_.stopping()) continue;
    Lease lease{seat.name, supervisor_.hand_over(seat.id, holder)};
    seat.leased = true;
    seat.holder = holder;
    supervisor_.record(EventKind::leased, seat.id, supervisor_.component(seat.name)->incarnation,
                       "pid " + std::to_string(holder));
    return lease;
  }
  return Error{Errc::exhausted, 0, "no free application seat (all are leased)"};
}

void ApplicationSeats::release(std::string_view name) {
  Seat* seat = find(name);
  if (seat == nullptr || !seat->leased) return;
  const std::size_t reclaimed = supervisor_.take_back(seat->id);
  const std::uint64_t incarnation = supervisor_.component(seat->name)->incarnation;
  supervisor_.record(EventKind::released, seat->id, incarnation, "pid " + std::to_string(seat->holder));
  seat->leased = false;
  if (reclaimed != 0) {
    supervisor_.record(EventKind::reclaimed, seat->id, incarnation, std::to_string(reclaimed) + " buffers", reclaimed);
  }
}

void ApplicationSeats::stopped(const ComponentView& component) {
  for (Seat& seat : seats_) {
    if (seat.id != component.id || !seat.leased) continue;
    seat.leased = false;
    supervisor_.record(EventKind::released, seat.id, component.incarnation, "the stack stops");
  }
}

}  // namespace flotilla::recovery
