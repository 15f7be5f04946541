#include "recovery/control_socket.hpp"

#include "dataplane/fd_passing.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "components/formats/stack_messages.hpp"
#include "components/formats/tcp_socket_page.hpp"

namespace flotilla::recovery {
namespace {

std::vector<std::string> words_of(const std::string& text) {
  std::istringstream stream(text);
  std::vector<std::string> words;
  for (std::string word; stream >> word;) words.push_back(word);
  return words;
}

bool parse_number(const std::string& text, std::uint64_t* value) {
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), *value);
  return error == std::errc() && end == text.data() + text.size();
}

// A counter name a component chose: shown only when it is a plain word, so a confused or hostile
// component cannot break the line-oriented answer.
bool printable_word(std::string_view name) {
  if (name.empty()) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string status_text(const Supervisor& supervisor) {
  std::ostringstream out;
  char line[160];
  std::snprintf(line, sizeof(line), "%-20s %3s  %-10s %11s %8s %8s\n", "component", "id", "status",
                "incarnation", "pid", "restarts");
  out << line;
  for (const ComponentView& view : supervisor.components()) {
    std::snprintf(line, sizeof(line), "%-20s %3u  %-10s %11llu %8d %8zu\n", view.name.c_str(), view.id,
                  std::string(status_name(view.status)).c_str(),
                  static_cast<unsigned long long>(view.incarnation), view.pid, view.restarts);
    out << line;
  }
  if (supervisor.config().has_network) {
    const NetworkConfig& network = supervisor.config().network;
    if (network.driver == "memwire") {
      out << "\nnetwork: memwire " << network.memwire_path << " side " << network.memwire_side << ", Flotilla at "
          << network.stack_address << "\n";
    } else {
      out << "\nnetwork: driver " << network.driver << " on " << network.stack_interface << ", Flotilla at "
          << network.stack_address << "; peer " << network.peer_address << " on " << network.peer_interface
          << " in namespace " << network.peer_namespace << "\n";
    }
  }
  const auto& events = supervisor.log().events();
  const std::size_t shown = std::min<std::size_t>(events.size(), 5);
  out << "\nlast " << shown << " of " << events.size() << " events ('flotilla events' for all):\n";
  for (std::size_t i = events.size() - shown; i < events.size(); ++i) {
    out << format_event(events[i]) << '\n';
  }
  return out.str();
}

std::string status_json(const Supervisor& supervisor) {
  // Buffers by holder, in one pass over the pool: a component's own and those parked for it.
  const BufferPool& pool = supervisor.pool();
  std::map<ComponentId, std::size_t> held;
  for (std::uint32_t i = 0; i < pool.buffer_count(); ++i) {
    const ComponentId owner = pool.owner_of(i);
    ++held[owner >= kParkedOwnerBase ? owner - kParkedOwnerBase : owner];
  }
  nlohmann::ordered_json components = nlohmann::ordered_json::array();
  for (const ComponentView& view : supervisor.components()) {
    components.push_back({{"name", view.name},
                          {"id", view.id},
                          {"status", status_name(view.status)},
                          {"incarnation", view.incarnation},
                          {"pid", view.pid},
                          {"restarts", view.restarts},
                          {"buffers", held[view.id]}});
  }
  const nlohmann::ordered_json status = {{"components", std::move(components)},
                                         {"events", supervisor.log().events().size()},
                                         {"pool", {{"buffers", pool.buffer_count()}, {"free", held[kNoComponent]}}}};
  // A name that is not UTF-8 is shown with U+FFFD rather than failing the whole answer.
  return status.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

std::string counters_text(const Supervisor& supervisor) {
  std::ostringstream out;
  for (const ComponentView& view : supervisor.components()) {
    if (view.status == ComponentStatus::idle) continue;  // an application seat nobody holds
    const CounterBlock* counters = supervisor.counters_of(view.name);
    out << view.name;
    for (std::size_t i = 0; i < kCounterCount; ++i) {
      const auto counter = static_cast<Counter>(i);
      out << ' ' << counter_name(counter) << '=' << counters->read(counter);
    }
    // Names come from the component: only printable words are shown.
    const NamedCounterTable* named = supervisor.named_counters_of(view.name);
    for (std::size_t i = 0; i < named->published(); ++i) {
      const NamedCounter& entry = named->entries[i];
      const std::string_view name(entry.name, ::strnlen(entry.name, kCounterNameBytes));
      if (!printable_word(name)) continue;
      out << ' ' << name << '=' << entry.read();
    }
    out << '\n';
  }
  return out.str();
}

}  // namespace

Result<ControlServer> ControlServer::listen(const std::string& path) {
  auto address = control_address(path);
  if (!address) return address.error();
  // The socket's folder is ours alone; creating it 0700 keeps others out before chmod does.
  const std::string folder = path.substr(0, path.find_last_of('/'));
  if (!folder.empty() && ::mkdir(folder.c_str(), 0700) != 0 && errno != EEXIST) {
    return Error::from_errno("control socket folder");
  }
  ControlServer server;
  server.listener_.reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!server.listener_.valid()) return Error::from_errno("control socket");
  ::unlink(path.c_str());  // a stale socket from a supervisor that died; callers check liveness first
  // and that stack's descriptor table: programs of this stack make a new one (any still holding
  // the old one keep it until they let go).
  ::unlink(descriptor_table_path(path).c_str());
  if (::bind(server.listener_.get(), reinterpret_cast<const sockaddr*>(&address.value()),
             sizeof(sockaddr_un)) != 0) {
    return Error::from_errno("control socket bind");
  }
  if (::chmod(path.c_str(), 0600) != 0) return Error::from_errno("control socket chmod");
  if (::listen(server.listener_.get(), 16) != 0) return Error::from_errno("control socket listen");
  server.path_ = path;
  return server;
}

ControlServer::~ControlServer() {
  if (listener_.valid() && !path_.empty()) {
    ::unlink(path_.c_str());
    ::unlink(descriptor_table_path(path_).c_str());
  }
}

std::vector<pollfd> ControlServer::pollfds() const {
  std::vector<pollfd> fds{pollfd{listener_.get(), POLLIN, 0}};
  for (const Client& client : clients_) fds.push_back(pollfd{client.fd.get(), POLLIN, 0});
  for (const ForkToken& token : fork_tokens_) fds.push_back(pollfd{token.fd.get(), POLLIN, 0});
  return fds;
}

void ControlServer::serve(Supervisor& supervisor, Registrar& registrar, ApplicationSeats& seats,
                          const std::vector<pollfd>& ready) {
  // The tokens after the clients in `ready` (pollfds' order): one whose other end is gone ends
  // its fork. Looked at first, while `ready`'s indices still match.
  const std::size_t tokens_at = 1 + clients_.size();
  std::vector<std::size_t> ended;
  for (std::size_t i = tokens_at; i < ready.size() && i - tokens_at < fork_tokens_.size(); ++i) {
    if ((ready[i].revents & (POLLHUP | POLLERR | POLLNVAL)) != 0) ended.push_back(i - tokens_at);
  }
  for (auto it = ended.rbegin(); it != ended.rend(); ++it) {
    fork_ended(supervisor, fork_tokens_[*it].seat, fork_tokens_[*it].fork);
    fork_tokens_.erase(fork_tokens_.begin() + static_cast<std::ptrdiff_t>(*it));
  }
  std::vector<std::size_t> finished;
  std::vector<Client> through;  // connections handed in by "lease-through", served below
  for (std::size_t i = 1; i < ready.size() && i - 1 < clients_.size(); ++i) {
    if (ready[i].revents == 0) continue;
    const int fd = clients_[i - 1].fd.get();
    std::string request(kMaxControlPacket, '\0');
    // With room for descriptors: only a fork's token comes with one; any other is closed.
    auto received = recv_fds(fd, std::as_writable_bytes(std::span(request)));
    if (!received) {
      if (received.error().code == Errc::closed ||
          (received.error().sys_errno != EAGAIN && received.error().sys_errno != EINTR)) {
        finished.push_back(i - 1);
      }
      continue;
    }
    Client& client = clients_[i - 1];
    request.resize(received->payload_bytes);
    if (client.permitted && request.starts_with("fork-hold ")) {
      take_fork_token(supervisor, client, request, received->fds);
      continue;
    }
    if (client.permitted && words_of(request) == std::vector<std::string>{"lease-through"}) {
      // A process that inherited this connection asks for a seat of its own, to be answered on the
      // connection it passed: a fork child of a lease holder, or a program `flotilla run` granted
      // the stack to (its grant, a connection that never leases). Either may be another user by
      // now (nginx's workers, postgres under runuser): whoever holds the connection was given it.
      if (auto handed = handed_connection(received->fds)) through.push_back(std::move(*handed));
      continue;
    }
    if (!clients_[i - 1].permitted) {
      // Answered only after its request is read, so that closing does not reset the connection
      // and swallow the answer.
      static constexpr char kRefused[] = "error: permission denied: not the supervisor's user\n";
      ::send(fd, kRefused, sizeof(kRefused) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      finished.push_back(i - 1);
      continue;
    }
    if (words_of(request) == std::vector<std::string>{"lease"}) {
      serve_lease(seats, client);
      continue;
    }
    std::string reply = handle(supervisor, registrar, request);
    if (reply.size() > kMaxControlPacket) reply = "error: reply too large\n";
    ::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  for (auto it = finished.rbegin(); it != finished.rend(); ++it) {
    const Client& client = clients_[*it];
    if (!client.leased.empty()) seats.release(client.leased);  // every copy of it closed
    clients_.erase(clients_.begin() + static_cast<std::ptrdiff_t>(*it));
  }
  for (Client& client : through) {
    clients_.push_back(std::move(client));
    serve_lease(seats, clients_.back());
  }
  tell_ended_forks(supervisor);
  if (!ready.empty() && (ready[0].revents & POLLIN) != 0) {
    for (;;) {
      UniqueFd client(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (!client.valid()) break;
      ucred peer{};
      socklen_t length = sizeof(peer);
      const bool permitted = ::getsockopt(client.get(), SOL_SOCKET, SO_PEERCRED, &peer, &length) == 0 &&
                             (peer.uid == 0 || peer.uid == ::getuid());
      clients_.push_back(Client{std::move(client), permitted, peer.pid, {}});
    }
  }
}

std::optional<ControlServer::Client> ControlServer::handed_connection(std::vector<UniqueFd>& fds) {
  if (fds.size() != 1) return std::nullopt;
  int type = 0;
  int domain = 0;
  socklen_t length = sizeof(type);
  if (::getsockopt(fds[0].get(), SOL_SOCKET, SO_TYPE, &type, &length) != 0 || type != SOCK_SEQPACKET) return std::nullopt;
  length = sizeof(domain);
  if (::getsockopt(fds[0].get(), SOL_SOCKET, SO_DOMAIN, &domain, &length) != 0 || domain != AF_UNIX) return std::nullopt;
  if (::fcntl(fds[0].get(), F_SETFL, O_NONBLOCK) != 0) return std::nullopt;
  ucred peer{};
  length = sizeof(peer);
  if (::getsockopt(fds[0].get(), SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) return std::nullopt;
  // Permitted as the connection it came over is: only a holder of that lease could pass it.
  return Client{std::move(fds[0]), true, peer.pid, {}};
}

void ControlServer::take_fork_token(Supervisor& supervisor, const Client& client, const std::string& request,
                                    std::vector<UniqueFd>& fds) {
  // Never answered: the lease connection says nothing more after the lease (a program reads its
  // readiness as the lease's end).
  const std::vector<std::string> words = words_of(request);
  std::uint64_t fork = 0;
  if (client.leased.empty() || fds.size() != 1 || words.size() != 2 || !parse_number(words[1], &fork) || fork == 0) {
    return;
  }
  const auto same_seat = [&](const ForkToken& token) { return token.seat == client.leased; };
  if (static_cast<std::size_t>(std::count_if(fork_tokens_.begin(), fork_tokens_.end(), same_seat)) >=
      kForkTokensPerSeat) {
    fork_ended(supervisor, client.leased, fork);
    return;
  }
  fork_tokens_.push_back(ForkToken{std::move(fds[0]), client.leased, fork});
}

void ControlServer::fork_ended(Supervisor& supervisor, const std::string& seat, std::uint64_t fork) {
  EndedForks& ended = ended_forks_[seat];
  if (ended.total == 0) {
    const auto& regions = supervisor.config().regions;
    for (const ChannelConfig& channel : supervisor.config().channels) {
      if (channel.a != seat && channel.b != seat) continue;
      const std::string region = formats::tcp_region_name(channel.name);
      if (std::none_of(regions.begin(), regions.end(), [&](const RegionConfig& r) { return r.name == region; })) continue;
      const std::string& replica = channel.a == seat ? channel.b : channel.a;
      // A running replica hears of the ends from now on; any other, of every one remembered.
      const auto view = supervisor.component(replica);
      const bool running = view && view->status == ComponentStatus::running;
      ended.replicas.push_back(EndedForks::Listener{replica, running ? view->incarnation : 0, 0});
    }
  }
  ended.forks.push_back(fork);
  if (ended.forks.size() > kEndedForksRemembered) ended.forks.pop_front();
  ++ended.total;
}

void ControlServer::tell_ended_forks(Supervisor& supervisor) {
  for (auto& entry : ended_forks_) {
    EndedForks& ended = entry.second;
    const std::uint64_t oldest = ended.total - ended.forks.size();
    for (EndedForks::Listener& listener : ended.replicas) {
      const auto view = supervisor.component(listener.replica);
      if (!view || view->status != ComponentStatus::running) continue;
      if (view->incarnation != listener.incarnation) {
        listener.incarnation = view->incarnation;
        listener.heard = oldest;
      }
      // Behind by more than is remembered (its ring was full that long): what is left of them.
      for (listener.heard = std::max(listener.heard, oldest); listener.heard < ended.total; ++listener.heard) {
        const std::uint64_t fork = ended.forks[static_cast<std::size_t>(listener.heard - oldest)];
        const Message notice = Message::make(stack::kTcpForkEndedKind, stack::TcpForkEndedBody{fork});
        if (!supervisor.send_control(view->id, notice)) break;
      }
    }
  }
}

void ControlServer::serve_lease(ApplicationSeats& seats, Client& client) {
  std::string refusal;
  if (!client.leased.empty()) {
    refusal = "error: this connection holds a lease already\n";
  } else if (auto lease = seats.lease(client.pid); !lease) {
    refusal = std::string("error: ") + lease.error().context + "\n";
  } else {
    const std::string reply = "ok\n" + lease->name + "\n";
    if (auto sent = send_fds(client.fd.get(), std::as_bytes(std::span(reply)), lease->fds); !sent) {
      seats.release(lease->name);  // the program never got it
      return;
    }
    client.leased = lease->name;
    return;
  }
  ::send(client.fd.get(), refusal.data(), refusal.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

void ControlServer::run_schedule(Supervisor& supervisor) {
  const auto now = std::chrono::steady_clock::now();
  for (auto it = schedule_.begin(); it != schedule_.end();) {
    if (it->at > now) {
      ++it;
      continue;
    }
    (void)supervisor.inject(it->component, it->fault);  // a component that is down is skipped
    it = schedule_.erase(it);
  }
}

std::string ControlServer::handle(Supervisor& supervisor, Registrar& registrar, const std::string& request) {
  const std::vector<std::string> words = words_of(request);
  if (words.empty()) return "error: empty request\n";
  const std::string& verb = words[0];
  if (verb == "status" && words.size() == 1) return "ok\n" + status_text(supervisor);
  if (verb == "status-json" && words.size() == 1) return "ok\n" + status_json(supervisor);
  if (verb == "counters" && words.size() == 1) return "ok\n" + counters_text(supervisor);
  if (verb == "files-prefix" && words.size() == 1) return "ok\n" + supervisor.config().files_prefix + "\n";
  if (verb == "stack-interface" && words.size() == 1) {
    // The kernel interface the driver uses (a datagram's IP_PKTINFO names it; empty: none,
    // memwire), then the stack's address on it (what a program listing its interfaces finds there).
    const SupervisorConfig& config = supervisor.config();
    const bool kernel_interface = config.has_network && config.network.driver != "memwire";
    if (!kernel_interface) return "ok\n\n";
    return "ok\n" + config.network.stack_interface + "\n" + config.network.stack_address + "\n";
  }
  if (verb == "events" && words.size() == 2) {
    std::uint64_t from = 0;
    if (!parse_number(words[1], &from)) return "error: events takes a start index\n";
    const auto& events = supervisor.log().events();
    std::string reply = "ok\n";
    std::size_t index = std::min<std::size_t>(from, events.size());
    for (std::size_t sent = 0; index < events.size() && sent < kEventsPerReply; ++index, ++sent) {
      reply += format_event(events[index]) + "\n";
    }
    return reply + "next " + std::to_string(index) + "\n";
  }
  if (verb == "inject" && (words.size() == 3 || words.size() == 4)) {
    Fault fault = Fault::none;
    if (!parse_fault(words[2], &fault)) {
      return "error: unknown fault '" + words[2] + "' (crash, abort, hang or corrupt)\n";
    }
    if (!supervisor.component(words[1])) return "error: no component named '" + words[1] + "'\n";
    std::uint64_t at_ms = 0;
    if (words.size() == 4 && !parse_number(words[3], &at_ms)) {
      return "error: the delay must be whole milliseconds\n";
    }
    if (at_ms > 0) {
      schedule_.push_back(Scheduled{std::chrono::steady_clock::now() + std::chrono::milliseconds(at_ms),
                                    words[1], fault});
      return "ok\nscheduled " + words[2] + " of " + words[1] + " in " + std::to_string(at_ms) + " ms\n";
    }
    if (auto status = supervisor.inject(words[1], fault); !status) {
      return "error: " + words[1] + " is not running\n";
    }
    return "ok\ninjected " + words[2] + " into " + words[1] + "\n";
  }
  if (verb == "names" && words.size() == 1) {
    auto rows = registrar.names();
    if (!rows) return std::string("error: ") + rows.error().context + "\n";
    std::string reply = "ok\n";
    char line[256];
    std::snprintf(line, sizeof(line), "%-24s %-11s %-12s %-11s %s\n", "NAME", "KIND", "OWNER",
                  "INCARNATION", "VERSION");
    reply += line;
    for (const NameRow& row : *rows) {
      std::string owner = std::to_string(row.owner);
      for (const auto& view : supervisor.components()) {
        if (view.id == row.owner) owner = view.name;
      }
      std::snprintf(line, sizeof(line), "%-24s %-11s %-12s %-11llu %llu%s%s\n", row.name.c_str(),
                    row.kind.c_str(), owner.c_str(), static_cast<unsigned long long>(row.incarnation),
                    static_cast<unsigned long long>(row.version), row.members.empty() ? "" : "  ",
                    row.members.c_str());
      reply += line;
    }
    return reply;
  }
  if (verb == "down" && words.size() == 1) {
    down_requested_ = true;
    return "ok\nstopping\n";
  }
  return "error: unknown request '" + request.substr(0, 64) + "'\n";
}

Result<std::string> control_request(const std::string& path, const std::string& request,
                                    std::string* error_text) {
  auto connected = connect_control(path);
  if (!connected) return connected.error();
  UniqueFd socket = std::move(connected.value());
  timeval limit{10, 0};  // a supervisor that does not answer in 10 s is as good as gone
  ::setsockopt(socket.get(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
  // A supervisor that refuses us answers at once and hangs up, so our send may fail: its answer
  // is still waiting to be read, and it says why.
  const bool sent = ::send(socket.get(), request.data(), request.size(), MSG_NOSIGNAL) >= 0;
  const int send_errno = errno;
  std::string reply(kMaxControlPacket, '\0');
  const ssize_t got = ::recv(socket.get(), reply.data(), reply.size(), sent ? 0 : MSG_DONTWAIT);
  if (!sent && got <= 0) {
    errno = send_errno;
    return Error::from_errno("send to the supervisor");
  }
  if (got < 0) return Error::from_errno("no answer from the supervisor");
  if (got == 0) return Error{Errc::closed, 0, "the supervisor hung up"};
  reply.resize(static_cast<std::size_t>(got));
  if (reply.rfind("ok\n", 0) == 0) return reply.substr(3);
  if (error_text != nullptr) {
    *error_text = reply.rfind("error: ", 0) == 0 ? reply.substr(7) : reply;
    while (!error_text->empty() && error_text->back() == '\n') error_text->pop_back();
  }
  return Error{Errc::invalid_argument, 0, "the supervisor refused the request"};
}

std::string whole_event_log(const std::string& path) {
  std::string all;
  std::uint64_t from = 0;
  for (;;) {
    std::string refusal;
    auto reply = control_request(path, "events " + std::to_string(from), &refusal);
    if (!reply) return all;
    const std::size_t marker = reply.value().rfind("next ");
    if (marker == std::string::npos) return all;
    all += reply.value().substr(0, marker);
    std::uint64_t next = 0;
    if (!parse_number(reply.value().substr(marker + 5, reply.value().find('\n', marker) - marker - 5), &next) ||
        next <= from) {
      return all;
    }
    from = next;
  }
}

CounterTable parse_counters(const std::string& answer) {
  CounterTable table;
  std::istringstream lines(answer);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::string component;
    words >> component;
    for (std::string pair; words >> pair;) {
      const auto equals = pair.find('=');
      std::uint64_t value = 0;
      if (equals != std::string::npos && equals > 0 && parse_number(pair.substr(equals + 1), &value)) {
        table[component][pair.substr(0, equals)] = value;
      }
    }
  }
  return table;
}

}  // namespace flotilla::recovery
