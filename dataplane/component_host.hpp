// The component's side of the supervisor contract. A component started by the supervisor calls
// ComponentHost::attach(), which maps what it was handed at the fixed descriptors (see
// control_block.hpp), attaches its channels as this incarnation, and builds its component loop.
// The host also carries out injected faults inside the loop and tells the supervisor when the
// first message after a restart has been served ("recovered").
//
// A program the supervisor did not start (one run with `flotilla run`, through the preload
// library) calls ComponentHost::lease() instead: it asks the supervisor, over the control socket,
// for one of the configuration's external components (an application seat), receives that
// seat's descriptors, and is that component until the lease ends. The lease ends when every copy
// of lease_fd() is closed (the process and any children it forked exit); the supervisor then
// tells the slot's peers that it restarted, so they drop what it left behind. Such a program does
// not run the loop: it calls loop().poll_once() when it wants its messages handled, and it sleeps
// in its own poll/epoll_wait on wake_fd() beside its other descriptors:
//   host.arm_wake();                       // the doorbell now says "asleep on the eventfd"
//   if (!host.loop().poll_once() && !anything_else_ready) poll({wake_fd(), ...}, timeout);
//   host.disarm_wake();                    // flag down, eventfd drained
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/buffer_pool.hpp"
#include "dataplane/channel.hpp"
#include "dataplane/component_loop.hpp"
#include "dataplane/shared_region.hpp"
#include "dataplane/control_block.hpp"

namespace flotilla {

class ComponentHost {
 public:
  using PeerRestarted = std::function<void(ComponentId peer, std::uint64_t incarnation)>;
  // Control messages other than peer_restarted; the handler validates them.
  using ControlHandler = std::function<void(const Message& message)>;

  // `policy` is the program's own; a policy named by the supervisor's configuration (in
  // kWaitPolicyVariable) replaces it (configured_wait_policy).
  static Result<std::unique_ptr<ComponentHost>> attach(WaitPolicy policy);
  // Leases an application seat from the supervisor listening at `socket_path`. Errc::closed: no
  // supervisor listens there; Errc::exhausted: every slot is leased; Errc::invalid_argument: it
  // refused (the message is in the error's context).
  static Result<std::unique_ptr<ComponentHost>> lease(const std::string& socket_path);
  // Leases a seat of its own through a lease connection this process inherited (a fork child of
  // a leased program): works whatever the child became since (another user, another root
  // directory), as only a holder of that connection can ask. The same errors as lease().
  static Result<std::unique_ptr<ComponentHost>> lease_through(int inherited_lease_fd);

  // Leased hosts only (-1 otherwise): the connection holding the lease (readable, with POLLHUP,
  // once the supervisor is gone), and the eventfd the stack writes while this process sleeps.
  int lease_fd() const { return lease_.get(); }
  int wake_fd() const { return wake_.get(); }
  // Calls `visit` with each descriptor this host keeps open (its lease, eventfds, regions; -1 for
  // one it has not).
  template <class Visit>
  void for_each_descriptor(Visit visit) const {
    for (const int fd : {control_.fd(), bells_region_.fd(), state_.fd(), lease_.get(), wake_.get()}) visit(fd);
    if (pool_) visit(pool_->region().fd());
    for (const SharedRegion& region : channel_regions_) visit(region.fd());
    for (const SharedRegion& region : regions_) visit(region.fd());
    for (const UniqueFd& fd : peer_wake_fds_) visit(fd.get());
  }
  // The address space its shared regions take in this process (most of it sparse).
  std::size_t mapped_bytes() const {
    std::size_t bytes = control_.size() + bells_region_.size() + state_.size() + (pool_ ? pool_->region().size() : 0);
    for (const SharedRegion& region : channel_regions_) bytes += region.size();
    for (const SharedRegion& region : regions_) bytes += region.size();
    return bytes;
  }
  // Holds descriptor `copy` (a copy of `from`, which it holds) in place of `from`, and lets go of
  // `from` without closing it: a program is about to put a descriptor of its own at that number
  // (dup2). False, and nothing changed, when it does not hold `from`.
  bool renumber(int from, int copy);
  // Before sleeping on wake_fd(): raises the doorbell's eventfd flag (with the fence the protocol
  // needs). The caller must then look at its inputs once more before it sleeps.
  void arm_wake();
  // After waking (or deciding not to sleep): lowers the flag and drains the eventfd.
  void disarm_wake();

  ComponentId id() const { return block_->id; }
  std::uint64_t incarnation() const { return incarnation_; }
  std::string_view name() const { return block_->name; }

  // A channel by its configured name, or nullptr when this component was not given it.
  ChannelEnd* channel(std::string_view name);
  ComponentId peer_of(std::string_view channel_name) const;
  // Every channel this component was given, in grant order.
  std::size_t channel_count() const { return channels_.size(); }
  std::string_view channel_name(std::size_t index) const { return block_->channels[index].name; }
  ComponentId channel_peer(std::size_t index) const { return block_->channels[index].peer; }
  ChannelEnd& channel_at(std::size_t index) { return channels_[index]; }

  ComponentLoop& loop() { return *loop_; }
  CounterBlock& counters() { return block_->counters; }
  // Counters of this component's own naming, shown by `flotilla top` and the `counters` request.
  NamedCounterTable& named_counters() { return block_->named_counters; }
  std::span<std::byte> state() { return state_.bytes(); }
  // A region the configuration declared for this component, empty when it was not given one.
  // Mapped read-only when this component is among its readers: a write then faults.
  std::span<std::byte> region(std::string_view name);
  BufferPool& pool() { return *pool_; }

  void on_peer_restarted(PeerRestarted handler) { peer_restarted_ = std::move(handler); }
  void on_control_message(ControlHandler handler) { control_handler_ = std::move(handler); }
  // Sends a message to the supervisor on the control ring; false when the ring is full.
  bool send_control(const Message& message);
  // Puts `text` (cut to 55 bytes) in the supervisor's event log as a `reported` event of this
  // incarnation; false when the control ring is full.
  bool report(std::string_view text);

  // Sends on a channel. The only difference from out.send_burst(): an injected `corrupt` fault
  // garbles the next message sent here, which the receiver must reject.
  Result<std::size_t> send(ChannelEnd& channel, std::span<const Message> messages);

  // Call after serving a message. The first call of a restarted incarnation reports "recovered".
  void served() {
    if (!recovery_reported_) report_recovered();
  }

  // Runs the loop, with the channels to seats no program holds idle (ComponentLoop::set_input_idle).
  void run();

 private:
  ComponentHost() = default;
  // What lease() and lease_through() share: asks on `connection`, which then holds the lease.
  static Result<std::unique_ptr<ComponentHost>> lease_over(UniqueFd connection);
  // What attach() and lease() share: `descriptor(n)` hands over the descriptor that stands for the
  // fixed number n of control_block.hpp.
  static Result<std::unique_ptr<ComponentHost>> attach_descriptors(
      WaitPolicy policy, const std::function<Result<UniqueFd>(int)>& descriptor);
  bool poll_faults();
  void on_control(std::span<const Message> messages);
  void report_recovered();

  SharedRegion control_;
  SharedRegion bells_region_;
  SharedRegion state_;
  std::optional<BufferPool> pool_;
  ControlBlock* block_ = nullptr;
  std::uint64_t incarnation_ = 0;
  std::vector<SharedRegion> channel_regions_;
  std::vector<SharedRegion> regions_;
  std::vector<ChannelEnd> channels_;
  RingConsumer control_in_;
  RingProducer control_out_;
  std::unique_ptr<ComponentLoop> loop_;
  PeerRestarted peer_restarted_;
  ControlHandler control_handler_;
  bool recovery_reported_ = false;
  bool corrupt_next_ = false;
  std::vector<UniqueFd> peer_wake_fds_;  // eventfds of leased peers, written by our channel ends
  UniqueFd lease_;
  UniqueFd wake_;
};

}  // namespace flotilla
