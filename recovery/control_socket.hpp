// The supervisor's control socket: a Unix SOCK_SEQPACKET socket, mode 0600, that accepts only
// clients running as the supervisor's own user or root (checked with SO_PEERCRED). One request
// is one packet of text; one reply is one packet, "ok" or "error: <why>" on its first line and
// the answer after it.
//
// Requests:  status | status-json | events FROM | counters | inject COMPONENT FAULT [AT_MS] |
//            names | down | lease
// `lease` (ComponentHost::lease) is answered with descriptors attached, and the connection then
// holds an application seat until it closes. On that connection the program sends, unanswered,
// `fork-hold F` with one descriptor attached (a fork's token, issue 14) before it forks: once
// every process holding the token's other end closed it or exited, the TCP replicas of the seat
// are told that fork F ended (kTcpForkEndedKind on their control rings), so its pins go.
#pragma once

#include <poll.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "dataplane/result.hpp"
#include "dataplane/unique_fd.hpp"
#include "dataplane/control_address.hpp"
#include "recovery/application_seats.hpp"
#include "recovery/registrar.hpp"
#include "recovery/supervisor.hpp"

namespace flotilla::recovery {

inline constexpr std::size_t kMaxControlPacket = 64 * 1024;
inline constexpr std::size_t kEventsPerReply = 200;


class ControlServer {
 public:
  static Result<ControlServer> listen(const std::string& path);
  ControlServer(ControlServer&&) = default;
  ControlServer& operator=(ControlServer&&) = default;
  ~ControlServer();

  // Descriptors to wait on, to pass to Supervisor::poll; then serve() with the same array.
  // `names` is answered by the registrar, `lease` by the seats.
  std::vector<pollfd> pollfds() const;
  void serve(Supervisor& supervisor, Registrar& registrar, ApplicationSeats& seats,
             const std::vector<pollfd>& ready);
  // Carries out injections scheduled with AT_MS once they are due.
  void run_schedule(Supervisor& supervisor);

  bool down_requested() const { return down_requested_; }

 private:
  ControlServer() = default;
  std::string handle(Supervisor& supervisor, Registrar& registrar, const std::string& request);

  struct Scheduled {
    std::chrono::steady_clock::time_point at;
    std::string component;
    Fault fault;
  };

  std::string path_;
  UniqueFd listener_;
  struct Client {
    UniqueFd fd;
    bool permitted;  // peer credentials: root or the supervisor's own user
    pid_t pid;
    std::string leased;  // the application seat this connection holds, if any
  };
  // `lease`: hands the client an application seat's descriptors; the connection holds the lease.
  void serve_lease(ApplicationSeats& seats, Client& client);
  // The connection a "lease-through" request passed, as a client of its own; nothing when it is
  // not exactly one unix seqpacket socket.
  static std::optional<Client> handed_connection(std::vector<UniqueFd>& fds);
  // A fork's token from the program holding `seat`: watched until its other end is closed.
  struct ForkToken {
    UniqueFd fd;
    std::string seat;
    std::uint64_t fork;
  };
  // Tokens watched per seat at most (a program forking faster than its children exit): past it
  // the fork ends at once for the supervisor, as if its child were gone.
  static constexpr std::size_t kForkTokensPerSeat = 1024;
  void take_fork_token(Supervisor& supervisor, const Client& client, const std::string& request,
                       std::vector<UniqueFd>& fds);
  // Notes that `fork` ended, for every TCP replica of `seat` (the components sharing a socket
  // region with it) to hear (tell_ended_forks).
  void fork_ended(Supervisor& supervisor, const std::string& seat, std::uint64_t fork);
  // The latest forks of a seat that ended, and how far each of its replicas heard of them. A
  // replica that was restarting when a fork ended, or whose incarnation died before reading the
  // notice, would keep that fork's pins (restored from its slot table) for as long as the seat
  // lasts: each new incarnation hears every remembered end again (one it does not pin, it ignores).
  struct EndedForks {
    std::deque<std::uint64_t> forks;  // oldest first, at most kEndedForksRemembered
    std::uint64_t total = 0;          // ends noted for the seat since the supervisor started
    struct Listener {
      std::string replica;
      std::uint64_t incarnation = 0;  // the incarnation `heard` counts for; 0: none yet
      std::uint64_t heard = 0;        // ends (of `total`) sent to it
    };
    std::vector<Listener> replicas;
  };
  // As many as a replica pins at once per seat (ReplicaServer::kForkSlots).
  static constexpr std::size_t kEndedForksRemembered = 64;
  // Sends each running replica of every seat the ends it has not heard; a full control ring is
  // tried again on the next round.
  void tell_ended_forks(Supervisor& supervisor);
  std::vector<Client> clients_;
  std::vector<ForkToken> fork_tokens_;
  std::map<std::string, EndedForks> ended_forks_;  // by seat
  std::vector<Scheduled> schedule_;
  bool down_requested_ = false;
};

// Client side: sends one request and returns the reply's body, or the error the supervisor gave
// (Errc::closed when no supervisor listens at `path`). `error_text` receives the reason.
// Every counter of every component from a `counters` answer ("component name=value ..." lines).
using CounterTable = std::map<std::string, std::map<std::string, std::uint64_t>>;
CounterTable parse_counters(const std::string& answer);

Result<std::string> control_request(const std::string& path, const std::string& request,
                                    std::string* error_text);

// The whole event log of the supervisor at `path`, one formatted event per line (it hands the log
// out in pages of kEventsPerReply); "" when no supervisor answers.
std::string whole_event_log(const std::string& path);

}  // namespace flotilla::recovery
