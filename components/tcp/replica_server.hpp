// One TCP replica's logic around its engine (components/tcp/engine.hpp): segments from IP go into
// the engine and the engine's segments go out to IP in pool buffers; applications' requests
// (components/formats/tcp_socket_page.hpp) become engine calls on the pages of the region each application
// shares with this replica, and engine events become state words and event messages there.
//
// Kept apart from the channels (TcpComponent, tcp_component.hpp, wires it to them) so tests can
// drive it with plain calls. Every value an application or IP sends is checked here: page indices
// against the region, generations against the replica's own private copy, request bits as mere
// hints.
//
// Messages that must not be lost (flow bindings, answers to applications) wait in a bounded
// private outbox when their ring is full and go out, in order, on the next poll. Segments are not
// queued: one that finds no room is lost, and TCP's timers recover it as they would a wire loss.
//
// A crash loses no connection (issue 15): the slot table (which page of which region holds which
// connection or listener, with its generation and accept counts) lives in the state store after
// the engine's connection table, each entry written like a seqlock. A restarted replica attaches
// the regions as they are, rebuilds its table from the store, and starts the engine with
// RestorePolicy::resume; what the dead incarnation's outboxes held is sent again (an announce, an
// event per live page, an accept per queued connection). Entries read back are untrusted: a torn
// or impossible one is dropped and counted, and its page freed.
//
// Listener groups (issue 14): one engine listener per address:port, shared by a list of members,
// each a listener page in some application's region: the listen that made it, listens with
// SO_REUSEPORT on a group made with it, and processes that inherited a member over fork and joined
// (kTcpJoinKind, with the inherited page and generation as proof). A new connection goes to one
// member, and only that member's application is told: the active member (kTcpActivateKind: its
// process accepts) with the shortest accept queue under its backlog, round robin on ties; while no
// member is active, the oldest. The page is taken in that member's region. A member leaves when
// its page is closed or its application's lease ends; the engine listener closes with the last.
// A member whose process has not shown it accepts (a master that never will, or a lone program
// that connects to itself before it accepts) is not told of its connections: once established they
// are held at the replica, unannounced, until a member accepts. When it does itself, its held ones
// are announced to it in the order they were established; when another member does, the held ones
// and those still in the handshake move there (place_held), so a master's process never hears of
// a connection it would strand.
// The connections placed with a leaving member that its process has not accepted, in the handshake,
// held or announced, move to another active member (as another process sharing a Linux accept
// queue takes them): their pages are copied into that member's region (move_connection, as a
// fork's claim), the established ones are announced there, and the old pages read as closed until
// the leaving process lets go of them. With no active member left, they wait with the oldest
// member that stays, held, as in a Linux accept queue that another process keeps open (a reload's
// old workers leaving before its new ones accept). With no member left, the held ones and those
// in the handshake are reset, and the announced ones are the leaving process's to close with its
// accept queue. Members live in
// the slot table too (each member page's entry names its listener, address, port, backlog, active
// and reuseport bits; a held connection's entry its held bit), so a restarted replica rebuilds its
// groups and keeps what it held.
//
// Connections shared over fork (issue 14): a process about to fork pins its connection pages
// (kTcpForkHoldKind, fork serial F); up to kForkSlots forks per application are pinned at once,
// each a bit of the page's `pins`. A close of a pinned page, or the end of its application's lease,
// leaves the connection open. A child that uses an inherited connection claims it
// (kTcpClaimKind: the parent's page, generation and F as proof): the replica copies the page's
// unread and unacknowledged bytes into a page of the child's region at the same stream positions,
// points the engine's connection at it (Engine::rebind_rings) and answers with the new page; the
// parent's page is freed once it closed it, else it turns holder (below). When every process
// that inherited F is gone, the supervisor says so (kTcpForkEndedKind, on_control): F's pins go,
// and a connection that nobody holds any more is closed. Pins and forks are in the slot table too.
//
// Holders (issue 14): every process that holds a descriptor of a connection may use it, and the
// connection lives until the last one lets go, as on Linux. One page carries the connection (its
// rings are the engine's: one producer per side, so one process at a time); the other seats that
// hold it keep a holder's page, whose generation word reads 0 while it does not carry. A claim
// leaves the parent's page a holder's page when the parent has not closed it (instead of closing it
// for good). A holder that uses the connection asks for it (kTcpCarryKind): it moves into the
// holder's own page, at its generation, the old carrier's page turning holder in turn (its
// library sees the word go to 0). A carrier that closes, or whose seat ends, hands the connection
// back the same way to a holder that has not closed it (an event tells that library); a closed
// holder's page that a fork still pins keeps the connection open; with no holder left it closes.
// A holder's page closes or ends like any page. The holder bit is in the slot entry, so a
// restarted replica keeps the set.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "components/formats/stack_messages.hpp"
#include "components/tcp/connection.hpp"
#include "components/tcp/engine.hpp"
#include "dataplane/buffer_pool.hpp"
#include "dataplane/counters.hpp"
#include "dataplane/message.hpp"
#include "dataplane/message_outbox.hpp"
#include "components/formats/tcp_socket_page.hpp"

namespace flotilla::tcp {

// Where the replica's messages go. Each returns false when the ring had no room (nothing sent).
class ReplicaOutputs {
 public:
  virtual ~ReplicaOutputs() = default;
  // Hands `packet.segment` to IP and sends the message naming it.
  virtual bool segment_to_ip(const stack::TransportPacketBody& packet) = 0;
  virtual bool control_to_ip(const Message& message) = 0;
  virtual bool to_app(std::size_t app, const Message& message) = 0;
};

struct ReplicaSettings {
  std::uint16_t index = 0;  // this replica's number, 0 .. count-1
  std::uint16_t count = 1;
  std::uint32_t address = 0;  // the stack's IPv4 address, host order
  std::size_t ring_bytes = 1u << 20;  // each socket ring in the application regions (a power of two)
  EngineSettings engine;
  // Tests only (the poison rule): crash on every segment with payload to or from this port (0: none).
  std::uint16_t test_crash_port = 0;
};

class ReplicaServer final : public EngineHost {
 public:
  // `apps` are the application regions (one per application channel, in channel order; an
  // empty span for an application given none). `state` holds the engine's connection table.
  static Result<std::unique_ptr<ReplicaServer>> create(BufferPool& pool, ComponentId self,
                                                       std::span<std::byte> state,
                                                       std::span<const std::span<std::byte>> apps,
                                                       const ReplicaSettings& settings, ReplicaOutputs& outputs,
                                                       NamedCounterTable& counters, std::uint64_t incarnation,
                                                       std::uint64_t now_ns);

  // Bytes of state store a replica with `settings` and application regions of `pages` pages each
  // needs: the engine's table, then the slot table.
  static std::size_t state_bytes(const ReplicaSettings& settings, std::span<const std::uint32_t> pages);

  // Tells IP who this replica is and what became of its flows.
  void announce(stack::TcpReplicaMode mode);
  // What the engine found of the predecessor's connections.
  const RestoreReport& restore_report() const { return engine_->restore_report(); }

  void on_segment(const stack::TransportPacketBody& packet, std::uint64_t now_ns);
  void on_app_message(std::size_t app, const Message& message, std::uint64_t now_ns);
  // A message of the supervisor on the control ring (kTcpForkEndedKind).
  void on_control(const Message& message, std::uint64_t now_ns);
  // Forks whose pins an application may hold at once; past it a fork pins nothing.
  static constexpr std::size_t kForkSlots = 64;
  // The application restarted or died: everything it had here is aborted and its region formatted
  // afresh.
  void on_app_restarted(std::size_t app, std::uint64_t now_ns);
  // Timers and outboxes. Returns whether it did anything.
  bool poll(std::uint64_t now_ns);
  // The engine's next timer, or sooner while a move waits for a process to leave its rings (the
  // process says nothing when it does).
  std::uint64_t next_deadline_ns() const { return std::min(engine_->next_deadline_ns(), move_retry_ns_); }
  std::size_t connection_count() const { return engine_->connection_count(); }

  // EngineHost.
  bool transmit(const OutgoingSegment& segment) override;
  void flush_segments() override;
  std::optional<StreamRings> rings_for_restored(ConnectionHandle connection, const FourTuple& tuple,
                                                ListenerId listener) override;
  std::uint32_t connection_room(ListenerId listener) override;
  std::optional<StreamRings> rings_for(ListenerId listener, ConnectionHandle connection,
                                       const FourTuple& tuple) override;
  bool claim_flow(const FourTuple& tuple) override;
  void release_flow(const FourTuple& tuple) override;
  void on_events(ConnectionHandle connection, std::uint32_t events, int error) override;
  void on_accept_ready(ListenerId listener, ConnectionHandle connection, const FourTuple& tuple) override;

 private:
  enum class PageKind : std::uint8_t { free, connection, listener };
  // What the replica knows about one page of an application's region: private, so the application
  // cannot change it.
  struct SocketPage {
    PageKind kind = PageKind::free;
    bool app_closed = false;       // the application closed or aborted it
    bool engine_released = false;  // the engine no longer touches its rings
    bool announced = false;        // the application knows the page (passive: once accept-ready)
    // A passive connection established while its member had not shown it accepts: it waits here,
    // unannounced and in the engine's accept queue, for that member or another to accept.
    bool held = false;
    // An open's answer that has not reached the application's ring yet (it waits in the outbox):
    // a successor aborts the page, since the application asks again.
    bool unanswered = false;
    std::uint32_t generation = 0;
    ConnectionHandle connection;
    ListenerId listener = kNoListener;  // a passive connection's, or a listener page's group
    ConnectionOptions options;        // as the application set them
    // A listener: connections announced to the application, and how many of them it has taken
    // (the last value of the page's `accepted` word this replica believed).
    std::uint32_t accept_announced = 0;
    std::uint32_t accept_taken = 0;
    // An announced passive connection: its place in its listener's accept queue (the listener's
    // accept_announced before it), so a successor knows which are still queued. A held one: the
    // place it will take, in the order its member's held connections were established.
    std::uint32_t accept_order = 0;
    // A listener page: how many connections placed with it are held.
    std::uint32_t held_here = 0;
    // A passive connection: the member (a listener page of the same region) it was placed with.
    std::uint32_t listener_page = 0;
    // A listener page: a member of the group listeners_[listener].
    bool active = false;      // its process accepts on it: new connections may go to it
    bool reuse_port = false;  // the group was made by a listen with SO_REUSEPORT
    std::uint16_t backlog = 0;
    std::uint32_t listen_address = 0;  // the group's (0: any)
    std::uint16_t listen_port = 0;
    // A connection: bit k set while fork App::forks[k] of the same application pins it.
    std::uint64_t pins = 0;
    // A connection page of a holder: another page carries `connection` (the engine's rings are
    // there); this one waits, its generation word at 0, until its application asks for it back.
    bool holder = false;
    // A connection page filled by a move between pages (a claim, a carry): only such a carrier may
    // have holders, so a close of any other looks for none. Not stored: a restart sets it again
    // from the holders' pages.
    bool moved = false;
  };
  struct SlotEntry;
  struct ForkSlot;
  struct SeatHeader;
  struct App {
    formats::TcpRegion region;
    SeatHeader* seat = nullptr;  // in the state store
    SlotEntry* slots = nullptr;  // in the state store, one per page
    ForkSlot* fork_slots = nullptr;  // in the state store, kForkSlots
    std::uint64_t forks[kForkSlots] = {};  // the fork serial pinning with bit k; 0: free
    bool restored = false;       // the region and its pages were carried on from the predecessor
    // The pages handed out so far (the region's first pages.size()): memory, in the region, the
    // slot table and here, follows the most sockets the application held at once.
    std::vector<SocketPage> pages;
    std::vector<std::uint32_t> free_pages;  // below pages.size()
    MessageOutbox outbox;  // room for two messages per page handed out, and a margin
  };
  // Where a connection of the engine, or a member of a listener group, lives.
  struct Place {
    std::uint32_t app = UINT32_MAX;
    std::uint32_t page = 0;
    std::uint32_t generation = 0;
  };
  // The members of one engine listener, oldest first (the first is where connections go while no
  // member is active).
  struct Group {
    std::vector<Place> members;
    std::uint32_t address = 0;
    std::uint16_t port = 0;
    bool reuse_port = false;
    std::uint32_t next = 0;  // where the round robin among equal queues starts
    // A connection became established with a member that does not accept while another does:
    // poll() moves it (not from inside the engine's call).
    bool held_to_place = false;
    // Connections held with any member (TcpSocketControl::holds_connections says whether any).
    std::uint32_t held = 0;
  };

  ReplicaServer(BufferPool& pool, ComponentId self, const ReplicaSettings& settings, ReplicaOutputs& outputs,
                NamedCounterTable& counters, std::uint64_t incarnation);

  // The slot table in `state` (after the engine's table): true when it holds a predecessor's that
  // fits these regions; otherwise formats it. Then attaches or formats each region.
  bool attach_slots(std::span<std::byte> state, std::span<const std::span<std::byte>> regions);
  void format_app(std::size_t app, std::span<std::byte> region);
  // Rebuilds `app`'s pages, connections_ and listeners_ from the slot table.
  void restore_app(std::size_t app);
  // After the engine came back: drops what it did not keep, aborts unanswered opens, and sends what
  // the dead incarnation's outbox may have held.
  void finish_restore(std::size_t app, std::uint64_t now_ns);
  // Writes page `page` of `app` to the slot table (after every change to it).
  void store_page(std::size_t app, std::uint32_t page);
  void send_announce(std::size_t app, stack::TcpReplicaMode mode);
  // Tests only: crashes when the connection at `place` has the port of --test-crash-port.
  void crash_if_test_port(const Place& place);
  void send_accepted(std::uint32_t app, std::uint32_t listener_page, std::uint32_t page, const FourTuple& tuple);
  void on_open(std::size_t app, const stack::TcpOpenBody& open, std::uint64_t now_ns);
  void on_kick(std::size_t app, const stack::TcpPageBody& kick, std::uint64_t now_ns);
  void on_option(std::size_t app, const stack::TcpOptionBody& option, std::uint64_t now_ns);
  void on_join(std::size_t app, const stack::TcpJoinBody& join);
  void on_activate(std::size_t app, const stack::TcpPageBody& activate);
  // A connection was placed with listener `member` (at its SYN, or moved there): an inactive
  // member's page says so (TcpSocketControl::holds_connections).
  void note_placed(const Place& member);
  // Sets a connection page's `held`, keeping its group's and member's counts; the members' pages
  // say when the group starts or stops holding.
  void set_held(std::size_t app, std::uint32_t page, bool held);
  // Writes whether `listener`'s group holds connections to every member's page; with `wake`, each
  // member also gets an event (a poller of any of them may take one).
  void publish_held(ListenerId listener, bool wake);
  // After a restart: the groups' and members' held counts from the pages, published with an event.
  void count_held();
  // Members share one accept queue, as processes sharing a Linux listener do: whichever accepts
  // first takes the connection. The replica pushes a connection only to an accepting member
  // waiting to accept with nothing queued, and holds the rest for a take. SO_REUSEPORT members too: their processes
  // (nginx's workers, postfix's master and its smtpd, which inherits the master's socket) may
  // never accept on some of them, and a connection held for the group strands nowhere.
  bool shared_queue(const Group& group) const;
  // Whether the member's process sleeps waiting for its listener (TcpSocketControl::accept_waiting).
  bool waiting_to_accept(const Place& member) const;
  // A take by `member` (its accept found its queue empty): one connection the group holds is
  // announced to it, its own first, else another member's moved into its region.
  void serve_take(const Place& member);
  // The requests of a kick (or a release), read from the page's word or carried by the message.
  void serve_requests(std::size_t app, std::uint32_t page, std::uint32_t generation, std::uint32_t requests,
                      std::uint64_t now_ns);
  void on_fork_hold(std::size_t app, const stack::TcpForkHoldBody& hold, std::uint64_t now_ns);
  void on_claim(std::size_t app, const stack::TcpClaimBody& claim, std::uint64_t now_ns);
  // Serves the claim when its proof holds; false (nothing done) when no page carries its pin.
  bool try_claim(std::size_t app, const stack::TcpClaimBody& claim, std::uint64_t now_ns);
  void refuse_claim(std::size_t app, const stack::TcpClaimBody& claim, int error);
  struct MovedConnection {
    int error = 0;           // EMFILE: no page left in the new region; EBADF: impossible ring indices
    std::uint32_t page = 0;  // in the new region
    bool live = false;       // the engine still carries the connection, now on the new page's rings
  };
  // Moves the connection of page `from_page` of `home` into a new page of `app` (a fork's claim, a
  // listener member leaving): copies what both rings hold at the same stream positions, points the
  // engine's connection at the copy, and clears `pin` from the old page, which goes at once when
  // its application let go of it or never heard of it, and otherwise reads as closed (EBADF) until
  // it lets go. The caller sets the new page's role and stores it.
  // With `keep_holder`, the old page turns holder instead when its application still holds it.
  MovedConnection move_connection(std::size_t home, std::uint32_t from_page, std::size_t app, const SocketPage& role,
                                  std::uint64_t pin, bool keep_holder = false);
  // The ring positions of page `page` of `app`, checked (its application wrote two of them): send
  // head and tail, receive head and tail. Nothing when they are impossible.
  std::optional<std::array<std::uint64_t, 4>> ring_positions(std::size_t app, std::uint32_t page) const;
  // Copies the connection carried by page `from_page` of `home` into page `to_page` of `app` (taken
  // already) at `positions`, and points the engine's connection at it. Whether the engine still
  // carries the connection.
  bool copy_connection(std::size_t home, std::uint32_t from_page, std::size_t app, std::uint32_t to_page,
                       const std::array<std::uint64_t, 4>& positions);
  // Page `page` of `home` no longer carries its connection: a holder's page when its application
  // still holds it, else freed.
  void leave_carrier(std::size_t home, std::uint32_t page);
  // The page that carries `connection`, engine-live or over.
  std::optional<Place> carrier_of(ConnectionHandle connection) const;
  // A holder's page of `connection`: one whose application has not closed it (`open_only`), or any.
  std::optional<Place> holder_of(ConnectionHandle connection, bool open_only) const;
  // Whether a holder's page names the connection carried by `page`.
  bool held_elsewhere(const SocketPage& page) const;
  // A holder asks for the connection of its page. The asks wait in order, one move per connection
  // at a time, each until the carrier's process is outside its rings (a byte it writes or reads
  // while the rings are copied would be lost or read twice).
  void on_carry(std::size_t app, const stack::TcpPageBody& carry, std::uint64_t now_ns);
  struct PendingCarry {
    Place holder;  // the asking page
    ConnectionHandle connection;
  };
  enum class CarryOutcome { carried, waits, dropped };
  static constexpr std::size_t kPendingCarries = 4096;
  void serve_pending_carries(std::uint64_t now_ns);
  CarryOutcome try_carry(const PendingCarry& pending, std::uint64_t now_ns);
  // Revokes the carrier's page and whether its process is outside its rings now (a process that
  // closed the page, or whose lease ended, is).
  bool outside_rings(const Place& carrier);
  // Moves the connection carried at `carrier` into the holder's page `holder`, and tells its
  // application. False when it could not (impossible ring positions).
  bool carry_to(const Place& holder, const Place& carrier, std::uint64_t now_ns);
  // The carrier page `page` of `app` let go (closed, its seat ended, its pins went): the connection
  // goes to an open holder, stays while a pinned one may still be claimed, else closes.
  void carrier_let_go(std::size_t app, std::uint32_t page, std::uint64_t now_ns);
  // A holder's page let go of `connection`: the carrier closes it when it was only kept for holders.
  void holder_let_go(ConnectionHandle connection, std::uint64_t now_ns);
  // Claims that came before their fork's hold (the child's channel was read before the parent's):
  // served when a hold comes, refused (EBADF) after kClaimWaitNs.
  struct WaitingClaim {
    std::size_t app;
    stack::TcpClaimBody claim;
    std::uint64_t deadline_ns;
  };
  static constexpr std::size_t kWaitingClaims = 64;
  static constexpr std::uint64_t kClaimWaitNs = 1'000'000'000;
  void serve_waiting_claims(std::uint64_t now_ns);
  void on_fork_ended(std::uint64_t fork, std::uint64_t now_ns);
  // Fork slot `slot` of `app` pins nothing now: it is free again.
  void free_fork_slot_if_unused(std::size_t app, std::size_t slot);
  // A connection page whose pins all went: closed now when its application closed it.
  void unpinned(std::size_t app, std::uint32_t page, std::uint64_t now_ns);
  void store_fork(std::size_t app, std::size_t slot);
  // The group listening on exactly address:port, if any.
  std::optional<ListenerId> find_group(std::uint32_t address, std::uint16_t port) const;
  // Makes page `index` of `app` (taken as a listener page) a member of `listener` and answers
  // the open or join `socket` (of the asker `nonce`) with it.
  void add_member(std::size_t app, std::uint32_t index, ListenerId listener, std::uint32_t socket,
                  std::uint32_t nonce, std::uint8_t options, std::uint16_t backlog);
  // The listener page `page` of `app` leaves its group (and is freed); the engine listener closes
  // when it was the last member.
  void leave_group(std::size_t app, std::uint32_t page, std::uint64_t now_ns);
  // Moves the connections placed with the leaving member `page` of `app` and not accepted by its
  // process to the group's other active members.
  void hand_over_queue(std::size_t app, std::uint32_t page, std::uint64_t now_ns);
  // Tells `member`'s application of the connection on `page` (queued at accept_announced).
  void announce_queued(const Place& member, std::uint32_t page, const FourTuple& tuple);
  // The connections of `app` placed with its member page `member` of `listener` and not announced:
  // held ones first, in the order they were established, then those in the handshake.
  std::vector<std::uint32_t> unannounced_of(std::size_t app, std::uint32_t member, ListenerId listener) const;
  // Connections placed with members of `listener` that do not accept go to the ones that do: an
  // active member's held connections are announced to it, in order; an inactive member's, and
  // those still in the handshake, move to active members (move_to_acceptor).
  void place_held(ListenerId listener);
  enum class Handover { moved, over, not_moved };
  // Moves the unaccepted connection on page `from` of `app`, placed with a member of `listener`
  // that will not take it, to the member a new connection would go to: when that one accepts, an
  // established connection is announced there; when none does, it waits there, held (or in the
  // handshake). over: it ended while it moved (nobody is told); not_moved: no member to take it,
  // or no page left.
  Handover move_in_group(std::size_t app, std::uint32_t from, ListenerId listener);
  // Where the next connection held for `member` goes in its order.
  std::uint32_t next_held_order(const Place& member) const;
  // A held connection leaves its listener's accept queue unannounced (its page goes).
  void forget_held(std::size_t app, std::uint32_t page);
  // The addresses and ports the replica wrote on page `page` of `app`.
  FourTuple page_tuple(std::size_t app, std::uint32_t page) const;
  // The member a new connection of `listener` goes to.
  std::optional<Place> pick_member(ListenerId listener);
  // Connections announced to the member at `place` and not taken by its application yet.
  std::uint32_t accept_queue_of(const Place& place) const;
  // A page of `app` the application may name: in range, handed out, the generation it was given.
  SocketPage* checked_page(std::size_t app, std::uint32_t page, std::uint32_t generation);
  // A freed page if there is one, else the next page never handed out (lowest first).
  std::optional<std::uint32_t> take_page(std::size_t app, PageKind kind);
  // Pages `app` can still be handed out.
  std::uint32_t pages_left(const App& entry) const;
  // Grows the outbox to two messages per page handed out and a margin, keeping what waits in it.
  void fit_outbox(App& entry);
  // Frees the page and gives the memory its rings took back to the system.
  void free_page(std::size_t app, std::uint32_t page);
  StreamRings rings_of(std::size_t app, std::uint32_t page);
  void notify(std::size_t app, std::uint32_t page);
  // A poller holding a connection that another process carries sees what the carrier's page offers
  // (as every Linux process polling one socket does): each holder's page gets the carrier's
  // readiness, and an event when it gained any. Only a moved connection can have holders.
  void tell_holders(const Place& carrier);
  std::uint32_t holder_readiness(const Place& carrier) const;
  void publish_info(std::size_t app, std::uint32_t page, ConnectionHandle connection);
  void send_app(std::size_t app, const Message& message);
  // An open's answer reached the application's ring.
  void answered(std::size_t app, const stack::TcpOpenedBody& answer);
  void send_ip_control(const Message& message);
  // Sends what waits for the channel to IP, in order, until it is full; whether anything went.
  bool drain_ip_outbox();
  void send_flow_binding(const FourTuple& tuple, stack::BindingChange change);
  // The next ephemeral port of this replica's share (the engine refuses a tuple in use).
  std::uint16_t pick_local_port();
  const Place* place_of(ConnectionHandle connection) const;
  ConnectionOptions options_from(std::uint8_t bits) const;

  BufferPool* pool_;
  ComponentId self_;
  ReplicaSettings settings_;
  ReplicaOutputs* outputs_;
  PoolCache cache_;
  std::unique_ptr<Engine> engine_;
  std::vector<App> apps_;
  // Bit `app` set: that application's outbox may hold messages; poll() drains only those, so
  // idle seats cost it nothing.
  std::vector<std::uint64_t> backlogged_;
  std::vector<Place> connections_;  // by ConnectionHandle::index
  std::vector<Group> listeners_;    // by ListenerId
  std::vector<WaitingClaim> waiting_claims_;
  std::vector<PendingCarry> pending_carries_;
  // When poll() next tries the waiting claims and carries (UINT64_MAX: none waits).
  std::uint64_t move_retry_ns_ = UINT64_MAX;
  static constexpr std::uint64_t kMoveRetryNs = 1'000'000;
  // The forks the supervisor said ended lately: a hold that comes after that word pins nothing.
  std::uint64_t ended_forks_[kForkSlots] = {};
  std::size_t next_ended_ = 0;
  MessageOutbox ip_outbox_{4096};
  // The segments of the engine call under way, handed to IP at flush_segments() (publish before
  // send); sized to EngineSettings::segment_batch at create().
  std::vector<stack::TransportPacketBody> segment_batch_;
  std::uint32_t next_generation_;
  std::uint64_t incarnation_;
  std::uint32_t next_port_ = 0;
  bool held_to_place_ = false;  // some group's held_to_place is set
  // Holder's pages in every region: while none, closes look for no holder.
  std::size_t holder_pages_ = 0;

  // The replica's own counters, beside the engine's, each registered under its field's name.
#define FLOTILLA_TCP_REPLICA_COUNTERS(X) \
  X(segments_from_ip)                    \
  X(segments_to_ip)                      \
  X(no_buffer)                           \
  X(ip_ring_full)                        \
  X(segments_parked)                     \
  X(bad_app_messages)                    \
  X(stale_app_messages)                  \
  X(pages_exhausted)                     \
  X(outbox_overflow)                     \
  X(bad_segments_from_ip)                \
  X(slots_restored)                      \
  X(slots_dropped)                       \
  X(group_joins)                         \
  X(group_joins_refused)                 \
  X(group_leaves)                        \
  X(group_reset_on_leave)                \
  X(group_moved_on_leave)                \
  X(group_held)                          \
  X(group_held_announced)                \
  X(group_moved_to_acceptor)             \
  X(group_takes)                         \
  X(group_takes_empty)                   \
  X(fork_holds)                          \
  X(fork_holds_refused)                  \
  X(claims)                              \
  X(claims_refused)                      \
  X(carries)                             \
  X(carries_waited)                      \
  X(carries_refused)                     \
  X(returns_to_holders)

  struct Counters {
    FLOTILLA_NAMED_COUNTERS(FLOTILLA_TCP_REPLICA_COUNTERS)
  } counters_{};
};

}  // namespace flotilla::tcp
