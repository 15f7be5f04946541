// The preload library's file fleet state: the table of fleet descriptors, the seat's client, the
// shared open file descriptions, fork and exec (see files.hpp).
#undef _FILE_OFFSET_BITS
#include "sockets/preload/files.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "dataplane/clock.hpp"
#include "dataplane/control_address.hpp"
#include "sockets/preload/calls.hpp"
#include "sockets/preload/real_calls.hpp"

namespace flotilla::preload {

namespace {

constexpr char kDefaultPrefix[] = "/flotilla";

pid_t g_pid = ::getpid();  // this process (a fork child sets its own)

// `path` with "." and ".." applied lexically and slashes made single: "/" at least.
std::string normal(std::string_view path) {
  std::vector<std::string_view> parts;
  std::size_t at = 0;
  while (at <= path.size()) {
    std::size_t slash = path.find('/', at);
    if (slash == std::string_view::npos) slash = path.size();
    const std::string_view part = path.substr(at, slash - at);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    at = slash + 1;
  }
  std::string out;
  for (const std::string_view part : parts) {
    out += '/';
    out += part;
  }
  return out.empty() ? "/" : out;
}

flock lock_on(std::uint64_t key, short type) {
  flock lock{};
  lock.l_type = type;
  lock.l_whence = SEEK_SET;
  lock.l_start = static_cast<off_t>(key);
  lock.l_len = 1;
  return lock;
}

std::uint64_t made_by(pid_t pid) { return (static_cast<std::uint64_t>(pid) << 2) | 1; }
constexpr std::uint64_t kLive = 2;

}  // namespace

int DescriptorTable::open(const std::string& path) {
  const int fd = REAL(open)(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return -errno;
  constexpr off_t kTableBytes = static_cast<off_t>(kSlots * SharedState::kBytes);
  struct stat described {};
  auto give_up = [fd](int error) {
    REAL(close)(fd);
    return -error;
  };
  if (REAL(fstat)(fd, &described) != 0) return give_up(errno);
  // Sized by whoever comes first; the file is sparse, a slot's page is made when first used.
  if (described.st_size < kTableBytes && REAL(ftruncate)(fd, kTableBytes) != 0) return give_up(errno);
  void* mapped = REAL(mmap)(nullptr, static_cast<std::size_t>(kTableBytes), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (mapped == MAP_FAILED) return give_up(errno);
  path_ = path;
  probe_ = fd;
  device_ = described.st_dev;
  inode_ = described.st_ino;
  slots_ = static_cast<SharedState*>(mapped);
  return 0;
}

bool DescriptorTable::held(std::size_t slot) const {
  flock lock = lock_on(key(slot), F_WRLCK);
  // A read lock of any description on the key conflicts; an unheld key says F_UNLCK.
  if (REAL(fcntl)(probe_, F_OFD_GETLK, &lock) != 0) return true;
  return lock.l_type != F_UNLCK;
}

int DescriptorTable::make(int flags, std::size_t& slot) {
  const std::uint64_t mine = made_by(g_pid);
  bool claimed = false;
  for (int pass = 0; pass < 2 && !claimed; ++pass) {
    for (std::size_t looked = 0; looked < kSlots; ++looked) {
      const std::size_t candidate = (cursor_ + looked) % kSlots;
      std::uint64_t free = 0;
      if (slots_[candidate].use.load(std::memory_order_relaxed) == 0 &&
          slots_[candidate].use.compare_exchange_strong(free, mine, std::memory_order_acquire)) {
        slot = candidate;
        cursor_ = (candidate + 1) % kSlots;
        claimed = true;
        break;
      }
    }
    if (!claimed && pass == 0) sweep();
  }
  if (!claimed) return -ENFILE;
  SharedState& state = slots_[slot];
  auto give_back = [&state](int error) {
    state.use.store(0, std::memory_order_release);
    return -error;
  };
  const int fd = REAL(open)(path_.c_str(), O_RDONLY | (flags & O_CLOEXEC));
  if (fd < 0) return give_back(errno);
  flock lock = lock_on(key(slot), F_RDLCK);
  if (REAL(lseek)(fd, static_cast<off_t>(key(slot)), SEEK_SET) < 0 || REAL(fcntl)(fd, F_OFD_SETLK, &lock) != 0) {
    const int error = errno;
    REAL(close)(fd);
    return give_back(error);
  }
  state.magic = SharedState::kMagic;
  state.inode = 0;
  state.flags = 0;
  state.type = 0;
  state.holder.store(0, std::memory_order_relaxed);
  state.offset.store(0, std::memory_order_relaxed);
  state.written_end.store(0, std::memory_order_relaxed);
  state.path[0] = '\0';
  state.use.store(kLive, std::memory_order_release);
  return fd;
}

void DescriptorTable::release_if_unheld(std::size_t slot) {
  std::uint64_t live = kLive;
  // Nobody can take a lock on an unheld key again (no description names it), so freeing after the
  // test races with nothing but another freer.
  if (slot >= kSlots || held(slot) || !slots_[slot].use.compare_exchange_strong(live, 0, std::memory_order_release)) {
    return;
  }
  // The next description takes the lowest slot this process freed: an open-close loop keeps
  // using one page of the table rather than touching all of it.
  cursor_ = std::min(cursor_, slot);
}

void DescriptorTable::sweep() {
  for (std::size_t slot = 0; slot < kSlots; ++slot) {
    std::uint64_t use = slots_[slot].use.load(std::memory_order_acquire);
    if (use == kLive) {
      release_if_unheld(slot);
    } else if ((use & 3) == 1) {
      const auto maker = static_cast<pid_t>(use >> 2);
      if (::kill(maker, 0) != 0 && errno == ESRCH) slots_[slot].use.compare_exchange_strong(use, 0);
    }
  }
}

std::optional<std::size_t> DescriptorTable::slot_of(int fd) const {
  struct stat described {};
  if (slots_ == nullptr || REAL(fstat)(fd, &described) != 0 || described.st_dev != device_ ||
      described.st_ino != inode_) {
    return std::nullopt;
  }
  const off_t at = REAL(lseek)(fd, 0, SEEK_CUR);
  if (at < static_cast<off_t>(kKeyBase) || at >= static_cast<off_t>(kKeyBase + kSlots)) return std::nullopt;
  const auto slot = static_cast<std::size_t>(at - static_cast<off_t>(kKeyBase));
  if (slots_[slot].use.load(std::memory_order_acquire) != kLive || slots_[slot].magic != SharedState::kMagic) {
    return std::nullopt;
  }
  return slot;
}

bool DescriptorTable::names_table(int fd, const struct stat& table) {
  struct stat described {};
  return REAL(fstat)(fd, &described) == 0 && described.st_dev == table.st_dev && described.st_ino == table.st_ino;
}

namespace {

// The table beside the stack's control socket: every process of the stack shares it.
std::string table_path() { return descriptor_table_path(control_socket_path()); }

}  // namespace

int fleet_error(int error) {
  static std::atomic<bool> told{false};
  if (error == -ENOSPC && !told.exchange(true)) {
    std::fprintf(stderr,
                 "flotilla: the file fleet's buffer cache is full ([files] cache_bytes); writes under %s fail "
                 "with ENOSPC\n",
                 fleet_prefix().data());
  }
  return error;
}

void note_written(SharedState& state, std::uint64_t end) {
  std::uint64_t known = state.written_end.load(std::memory_order_relaxed);
  while (known < end && !state.written_end.compare_exchange_weak(known, end, std::memory_order_release)) {
  }
}

void note_cut(SharedState& state, std::uint64_t end) {
  std::uint64_t known = state.written_end.load(std::memory_order_relaxed);
  while (known > end && !state.written_end.compare_exchange_weak(known, end, std::memory_order_release)) {
  }
}

OffsetHold::OffsetHold(SharedState& state) : state_(state) {
  // The holder is another process (this one's threads are serialised by the Files lock); one that
  // died inside a call leaves its pid, taken over once it is gone.
  for (unsigned spins = 1;; ++spins) {
    pid_t holder = 0;
    if (state.holder.compare_exchange_weak(holder, g_pid, std::memory_order_acquire)) return;
    if (holder == g_pid) return;  // left by this process (a call a signal handler jumped out of)
    if (spins % 256 == 0 && ::kill(holder, 0) != 0 && errno == ESRCH &&
        state.holder.compare_exchange_strong(holder, g_pid, std::memory_order_acquire)) {
      return;
    }
    ::sched_yield();
  }
}

OffsetHold::~OffsetHold() { state_.holder.store(0, std::memory_order_release); }

Files& Files::get() {
  // Never destroyed: stdio's streams are flushed (through here) after static destructors ran.
  static Files* const files = [] {
    auto* made = new Files();
    ::pthread_atfork([] { Files::get().mutex().lock(); }, [] { Files::get().mutex().unlock(); },
                     [] { Files::get().after_fork_child(); });
    return made;
  }();
  return *files;
}

Files::Files() = default;

std::string_view fleet_prefix() {
  // Filled once; a race fills it twice with the same bytes.
  static char prefix[256];
  static std::atomic<std::size_t> length{0};
  if (const std::size_t known = length.load(std::memory_order_acquire); known != 0) return {prefix, known};
  const char* wanted = std::getenv("FLOTILLA_FILES_PREFIX");
  std::size_t size = wanted != nullptr && wanted[0] == '/' ? std::strlen(wanted) : 0;
  while (size > 1 && wanted[size - 1] == '/') --size;
  // The whole namespace cannot be the fleet's, and an overlong prefix is not taken.
  if (size <= 1 || size >= sizeof(prefix)) {
    wanted = kDefaultPrefix;
    size = sizeof(kDefaultPrefix) - 1;
  }
  std::memcpy(prefix, wanted, size);
  length.store(size, std::memory_order_release);
  return {prefix, size};
}

bool fleet_path(int directory, const char* path, std::string& out) {
  if (path == nullptr) return false;
  std::string joined;
  if (path[0] == '/') {
    const std::string_view prefix = fleet_prefix();
    if (std::strncmp(path, prefix.data(), prefix.size()) != 0 ||
        (path[prefix.size()] != '\0' && path[prefix.size()] != '/')) {
      return false;
    }
    joined = path + prefix.size();
  } else if (directory == AT_FDCWD) {
    if (!g_cwd_in_fleet.load(std::memory_order_relaxed)) return false;
    joined = Files::get().cwd() + "/" + path;
  } else if (is_file(directory)) {
    Files& files = Files::get();
    Lock lock(files.mutex());
    const std::shared_ptr<OpenFile> file = files.at(directory);
    if (file == nullptr) return false;
    joined = std::string(file->state->path) + "/" + path;
  } else {
    return false;
  }
  out = normal(joined);
  return true;
}

std::string Files::cwd() const {
  Lock lock(mutex_);
  return cwd_;
}

void Files::set_cwd(std::string path) {
  Lock lock(mutex_);
  g_cwd_in_fleet.store(!path.empty(), std::memory_order_relaxed);
  cwd_ = std::move(path);
}

fs::Client* Files::client() {
  if (connection_ != nullptr && !connection_->stack_gone()) return &connection_->client();
  if (!lease_retry_.due()) return nullptr;
  auto leased = lease_when_a_seat_frees([] {
    const LowDescriptorsHeld held;
    return fs::FleetConnection::lease(control_socket_path());
  });
  if (leased) {
    // Descriptors opened under an earlier lease open their inode again under this one.
    if (connection_ != nullptr) ++generation_;
    connection_ = std::move(leased.value());
    lease_retry_.allow_now();
    return &connection_->client();
  }
  const Error& error = leased.error();
  lease_retry_.failed(error.code == Errc::exhausted ? ENFILE : ENOENT);
  if (!complained_) {
    complained_ = true;
    const char* why = error.code == Errc::exhausted ? "every application seat is leased (limits.app_seats)"
                      : error.code == Errc::closed ? "the stack is not running"
                      : error.code == Errc::system && error.sys_errno == EACCES
                          ? "the supervisor's socket serves root and its own user only"
                          : (error.context != nullptr ? error.context : "the lease was refused");
    std::fprintf(stderr, "flotilla: no file fleet under %s: %s; its paths fail with %s\n", fleet_prefix().data(), why,
                 std::strerror(lease_retry_.error()));
  }
  errno = lease_retry_.error();
  return nullptr;
}

std::shared_ptr<OpenFile> Files::at(int fd) {
  if (fd < 0 || static_cast<std::size_t>(fd) >= table_.size()) return nullptr;
  return table_[static_cast<std::size_t>(fd)];
}

int Files::client_fd(OpenFile& file) {
  fs::Client* client = this->client();
  if (client == nullptr) return -errno;
  if (file.client_fd >= 0 && file.generation == generation_) return file.client_fd;
  const int opened = client->open_inode(file.state->inode, static_cast<int>(file.state->flags));
  if (opened < 0) return opened;
  file.client_fd = opened;
  file.generation = generation_;
  return opened;
}

DescriptorTable* Files::descriptions() {
  if (descriptions_.is_open()) return &descriptions_;
  if (int error = descriptions_.open(table_path()); error != 0) {
    errno = -error;
    return nullptr;
  }
  return &descriptions_;
}

void Files::prepare_while_waiting(int flags) {
  prepared_ = Prepared{.wanted = true, .flags = flags};
  if (connection_ != nullptr) connection_->while_waiting(&Files::make_prepared, this);
}

void Files::make_prepared(void* context) {
  // An open(2), an lseek and a lock of the table: a tmpfs create's time, spent while the server runs
  // the open instead of after it.
  Files& files = *static_cast<Files*>(context);
  Prepared& prepared = files.prepared_;
  if (!prepared.wanted || prepared.made) return;
  prepared.made = true;
  DescriptorTable* table = files.descriptions();
  prepared.fd = table == nullptr ? -errno : table->make(prepared.flags, prepared.slot);
}

void Files::give_back(int fd, std::size_t slot) {
  REAL(close)(fd);
  descriptions_.release_if_unheld(slot);
}

void Files::discard_prepared() {
  if (connection_ != nullptr) connection_->while_waiting(nullptr, nullptr);
  if (prepared_.made && prepared_.fd >= 0) give_back(prepared_.fd, prepared_.slot);
  prepared_ = Prepared{};
}

int Files::take_descriptor(int flags, std::size_t& slot) {
  if (connection_ != nullptr) connection_->while_waiting(nullptr, nullptr);
  const Prepared prepared = std::exchange(prepared_, Prepared{});
  if (prepared.made) {
    slot = prepared.slot;
    return prepared.fd;
  }
  DescriptorTable* table = descriptions();
  if (table == nullptr) return -errno;
  return table->make(flags, slot);
}

int Files::install(int client_fd, const std::string& path, int flags) {
  fs::SharedDescriptor described;
  if (int error = connection_->client().describe_fd(client_fd, described); error != 0) {
    discard_prepared();
    return fail_with(-error);
  }
  if (path.size() >= sizeof(SharedState::path)) {
    discard_prepared();
    return fail_with(ENAMETOOLONG);
  }
  std::size_t slot = 0;
  const int fd = take_descriptor(flags, slot);
  if (fd < 0) return fail_with(-fd);
  if (fd >= kMaxFds) {
    give_back(fd, slot);
    return fail_with(EMFILE);
  }
  SharedState& state = descriptions_.at(slot);
  state.inode = described.inode;
  state.flags = static_cast<std::uint32_t>(flags) & (O_ACCMODE | O_APPEND);
  state.type = static_cast<std::uint8_t>(described.type);
  std::memcpy(state.path, path.c_str(), path.size() + 1);
  auto file = std::make_shared<OpenFile>();
  file->state = &state;
  file->slot = slot;
  file->client_fd = client_fd;
  file->generation = generation_;
  if (static_cast<std::size_t>(fd) >= table_.size()) table_.resize(static_cast<std::size_t>(fd) + 1);
  table_[static_cast<std::size_t>(fd)] = std::move(file);
  g_fd_kind[fd].store(FdKind::file, std::memory_order_relaxed);
  return fd;
}

void Files::share(int from, int to) {
  std::shared_ptr<OpenFile> file = at(from);
  if (file == nullptr || to < 0 || to >= kMaxFds) return;
  forget(to);
  if (static_cast<std::size_t>(to) >= table_.size()) table_.resize(static_cast<std::size_t>(to) + 1);
  table_[static_cast<std::size_t>(to)] = std::move(file);
  g_fd_kind[to].store(FdKind::file, std::memory_order_relaxed);
}

void Files::forget(int fd) {
  if (fd < 0 || static_cast<std::size_t>(fd) >= table_.size()) return;
  g_fd_kind[fd].store(FdKind::kernel, std::memory_order_relaxed);
  std::shared_ptr<OpenFile> file = std::move(table_[static_cast<std::size_t>(fd)]);
  // Its last descriptor here: this process's hold at the servers goes (what it wrote is
  // published already).
  if (file != nullptr && file.use_count() == 1 && file->client_fd >= 0 && file->generation == generation_ &&
      connection_ != nullptr) {
    (void)connection_->client().close(file->client_fd);
  }
}

int Files::close(int fd) {
  const std::weak_ptr<OpenFile> watched = at(fd);  // weak: forget() must see the same use count
  const std::size_t slot = watched.expired() ? 0 : watched.lock()->slot;
  const bool fleet = !watched.expired();
  forget(fd);
  const int closed = REAL(close)(fd);
  // Its last descriptor in this process: perhaps its last anywhere.
  if (fleet && watched.expired()) descriptions_.release_if_unheld(slot);
  return closed;
}

void Files::after_fork_child() {
  new (&mutex_) LibraryMutex();  // the parent's thread held it (see Runtime::after_fork_child)
  g_pid = ::getpid();
  // The parent's seat has one producer, the parent: the child leases its own on first use and
  // opens the inodes of the descriptors it inherited again there. The parent's connection is left
  // as it is (its descriptors, closed here, would end nothing: the parent holds them too).
  (void)connection_.release();
  ++generation_;
  lease_retry_.allow_now();
}

bool Files::attach(int fd, std::vector<std::shared_ptr<OpenFile>>& seen) {
  if (fd >= kMaxFds) return false;
  const std::optional<std::size_t> slot = descriptions_.slot_of(fd);
  if (!slot) return false;
  std::shared_ptr<OpenFile> file;
  for (const auto& known : seen) {
    if (known->slot == *slot) file = known;
  }
  if (file == nullptr) {
    file = std::make_shared<OpenFile>();
    file->state = &descriptions_.at(*slot);
    file->slot = *slot;
    seen.push_back(file);
  }
  if (static_cast<std::size_t>(fd) >= table_.size()) table_.resize(static_cast<std::size_t>(fd) + 1);
  table_[static_cast<std::size_t>(fd)] = std::move(file);
  g_fd_kind[fd].store(FdKind::file, std::memory_order_relaxed);
  return true;
}

void Files::adopt_inherited() {
  Lock lock(mutex_);
  DIR* directory = REAL(opendir)("/proc/self/fd");
  if (directory == nullptr) return;
  const int own = ::dirfd(directory);
  std::vector<int> inherited;
  struct stat table {};
  // No table, no fleet descriptor (and a program that never uses the fleet does not make one).
  if (REAL(stat)(table_path().c_str(), &table) != 0) {
    REAL(closedir)(directory);
    return;
  }
  while (const dirent64* entry = REAL(readdir64)(directory)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (*end != '\0' || end == entry->d_name || fd == own) continue;
    if (DescriptorTable::names_table(static_cast<int>(fd), table)) inherited.push_back(static_cast<int>(fd));
  }
  REAL(closedir)(directory);
  if (inherited.empty() || descriptions() == nullptr) return;
  std::vector<std::shared_ptr<OpenFile>> seen;
  for (const int fd : inherited) (void)attach(fd, seen);
}

// The hooks the other interposed calls use.

namespace {

// A fleet descriptor's call, entered: the lock, the description, the client and its descriptor.
struct FileCall {
  Lock lock;
  std::shared_ptr<OpenFile> file;
  fs::Client* client = nullptr;
  int client_fd = -1;
};

bool enter_file(int fd, FileCall& call) {
  Files& files = Files::get();
  call.lock = Lock(files.mutex());
  call.file = files.at(fd);
  if (call.file == nullptr) {
    errno = EBADF;
    return false;
  }
  call.client_fd = files.client_fd(*call.file);
  if (call.client_fd < 0) {
    errno = -call.client_fd;
    return false;
  }
  call.client = files.client();
  return call.client != nullptr;
}

thread_local std::vector<std::byte> t_gathered;

}  // namespace

ssize_t read_file(int fd, void* buffer, std::size_t length) {
  FileCall call;
  if (!enter_file(fd, call)) return -1;
  OffsetHold hold(*call.file->state);
  const std::uint64_t offset = call.file->state->offset.load(std::memory_order_relaxed);
  const std::span<std::byte> out(static_cast<std::byte*>(buffer), length);
  ssize_t got = call.client->pread(call.client_fd, out, offset);
  if (got == 0 && length > 0) {
    // The end as this process knew it: another holder of the file may have written past it.
    if (int error = call.client->refresh(call.client_fd, call.file->state->written_end.load(std::memory_order_acquire));
        error != 0) {
      return fail_with(-error);
    }
    got = call.client->pread(call.client_fd, out, offset);
  }
  if (got < 0) return fail_with(static_cast<int>(-got));
  call.file->state->offset.store(offset + static_cast<std::uint64_t>(got), std::memory_order_relaxed);
  return got;
}

ssize_t write_file(int fd, const void* buffer, std::size_t length) {
  FileCall call;
  if (!enter_file(fd, call)) return -1;
  SharedState& state = *call.file->state;
  OffsetHold hold(state);
  const std::span<const std::byte> data(static_cast<const std::byte*>(buffer), length);
  fs::SharedDescriptor described;
  if (int error = call.client->describe_fd(call.client_fd, described); error != 0) return fail_with(-error);
  ssize_t put = 0;
  if ((described.flags & O_APPEND) != 0) {
    put = call.client->write(call.client_fd, data);  // the server puts it at the end
    if (put >= 0) state.offset.store(static_cast<std::uint64_t>(call.client->lseek(call.client_fd, 0, SEEK_CUR)));
  } else {
    std::uint64_t offset = state.offset.load(std::memory_order_relaxed);
    if ((state.flags & O_APPEND) != 0) {  // set by F_SETFL after the open
      fs::FileStat stat;
      if (int error = call.client->fstat(call.client_fd, stat); error != 0) return fail_with(-error);
      offset = stat.size;
    }
    put = call.client->pwrite(call.client_fd, data, offset);
    if (put >= 0) state.offset.store(offset + static_cast<std::uint64_t>(put), std::memory_order_relaxed);
  }
  if (put < 0) return fail_with(-fleet_error(static_cast<int>(put)));
  if ((described.flags & O_APPEND) != 0 || (state.flags & O_APPEND) != 0) {
    // Published now: the next append, from any process, starts at the server's end.
    if (int error = call.client->fsync(call.client_fd); error != 0) return fail_with(-error);
  } else {
    // Another process sharing the description finds the end in the page; the server learns it at
    // close or fsync (close-to-open), not with a message per write.
    note_written(state, state.offset.load(std::memory_order_relaxed));
  }
  return put;
}

ssize_t readv_file(int fd, const iovec* vectors, int count) {
  if (count < 0) return fail_with(EINVAL);
  std::size_t total = 0;
  for (int i = 0; i < count; ++i) total += vectors[i].iov_len;
  t_gathered.resize(total);
  const ssize_t got = read_file(fd, t_gathered.data(), total);
  if (got <= 0) return got;
  std::size_t at = 0;
  for (int i = 0; i < count && at < static_cast<std::size_t>(got); ++i) {
    const std::size_t step = std::min(vectors[i].iov_len, static_cast<std::size_t>(got) - at);
    std::memcpy(vectors[i].iov_base, t_gathered.data() + at, step);
    at += step;
  }
  return got;
}

ssize_t writev_file(int fd, const iovec* vectors, int count) {
  if (count < 0) return fail_with(EINVAL);
  t_gathered.clear();
  for (int i = 0; i < count; ++i) {
    const auto* base = static_cast<const std::byte*>(vectors[i].iov_base);
    t_gathered.insert(t_gathered.end(), base, base + vectors[i].iov_len);
  }
  return write_file(fd, t_gathered.data(), t_gathered.size());
}

int close_file(int fd) {
  Files& files = Files::get();
  Lock lock(files.mutex());
  return files.close(fd);
}

void forget_files_in(unsigned int first, unsigned int last) {
  Files& files = Files::get();
  Lock lock(files.mutex());
  const unsigned int end = std::min<unsigned int>(last, kMaxFds - 1);
  for (unsigned int fd = first; fd <= end; ++fd) {
    if (is_file(static_cast<int>(fd))) files.forget(static_cast<int>(fd));
  }
}

int dup_file(int fd, int target, int flags, bool as_dup2) {
  Files& files = Files::get();
  if (!is_file(fd)) {
    // A kernel descriptor or a socket replaces a fleet one: this one goes, the rest as usual.
    if (REAL(fcntl)(fd, F_GETFD) < 0) return -1;
    standard_stream_flush(target);
    Lock lock(files.mutex());
    files.forget(target);
    standard_stream_follows(target);
    return kNotFile;
  }
  standard_stream_flush(target);
  if (fd == target) return as_dup2 ? fd : fail_with(EINVAL);
  const FdKind replaced = fd_kind(target);
  Lock lock(files.mutex());
  const int copy = as_dup2 ? REAL(dup2)(fd, target) : REAL(dup3)(fd, target, flags);
  if (copy < 0) return -1;
  if (replaced == FdKind::tcp || replaced == FdKind::epoll) {
    Lock sockets(Runtime::get().mutex());
    Runtime::get().forget(target);
  }
  files.share(fd, copy);
  standard_stream_follows(copy);
  return copy;
}

int fcntl_file(int fd, int command, void* argument, int (*real)(int, int, ...)) {
  Files& files = Files::get();
  Lock lock(files.mutex());
  const std::shared_ptr<OpenFile> file = files.at(fd);
  if (file == nullptr) return fail_with(EBADF);
  switch (command) {
    case F_DUPFD:
    case F_DUPFD_CLOEXEC: {
      const int copy = real(fd, command, argument);
      if (copy >= 0) files.share(fd, copy);
      return copy;
    }
    case F_GETFL:
      return static_cast<int>(file->state->flags) | O_LARGEFILE;
    case F_SETFL: {
      // O_APPEND, like Linux's; O_NONBLOCK means nothing to a file.
      const auto wanted = static_cast<std::uint32_t>(reinterpret_cast<std::intptr_t>(argument));
      file->state->flags = (file->state->flags & ~static_cast<std::uint32_t>(O_APPEND)) | (wanted & O_APPEND);
      return 0;
    }
    case F_SETLK:
    case F_SETLKW:
    case F_OFD_SETLK:
    case F_OFD_SETLKW:
    case F_GETLK:
    case F_OFD_GETLK: {
      // Record locks are granted at once and hold nothing back (every fleet descriptor is a
      // description of the one descriptor table, whose ranges are not the file's).
      auto* lock = static_cast<flock*>(argument);
      if (lock == nullptr) return fail_with(EFAULT);
      if (command == F_GETLK || command == F_OFD_GETLK) lock->l_type = F_UNLCK;
      return 0;
    }
    default:
      return real(fd, command, argument);  // FD_CLOEXEC: the descriptor's own
  }
}

}  // namespace flotilla::preload
