// The file fleet in the preload library: paths under the prefix (FLOTILLA_FILES_PREFIX, which
// `flotilla run` sets from `[files] prefix`; /flotilla by default) and descriptors opened there go
// to the fleet's client library (sockets/fs/); everything else goes to the kernel unchanged.
//
// A fleet descriptor is a real kernel descriptor: an open file description of the stack's
// descriptor table (DescriptorTable, a file beside the control socket), read-only, whose file
// offset names a slot of that table; the slot holds the fleet's open file description (SharedState:
// inode, open flags, offset, path). The kernel then does for fleet files what it does for its own:
// dup, dup2 onto 1, fork and exec (without FD_CLOEXEC) hand on the same description, hence the same
// kernel offset, hence the same slot. The kernel also says when the last descriptor of a
// description is gone, wherever it was: each description holds an OFD read lock on its slot's key,
// which the kernel drops with the description, so a slot is free when no lock is left on it. Each
// process that uses such a descriptor opens the inode at the servers once under its own seat (the
// servers count it as a holder: an unlinked file lives while one is left), and what it writes is
// seen by the others through the slot, and by everyone at close.
//
// An exec'd program finds its inherited fleet descriptors at load (descriptors of the table in
// /proc/self/fd) and, when 0, 1 or 2 is one, replaces stdin, stdout or stderr by a stdio stream that
// calls the fleet (the C library's own stdio reaches the kernel without passing here).
#pragma once

#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sockets/fs/fleet_connection.hpp"
#include "sockets/preload/runtime.hpp"

namespace flotilla::preload {

inline bool is_file(int fd) { return fd_kind(fd) == FdKind::file; }

// The interposed descriptor calls of other files hand fleet descriptors here.
ssize_t read_file(int fd, void* buffer, std::size_t length);
ssize_t write_file(int fd, const void* buffer, std::size_t length);
ssize_t readv_file(int fd, const iovec* vectors, int count);
ssize_t writev_file(int fd, const iovec* vectors, int count);
int close_file(int fd);
// close_range: forgets the fleet descriptors in [first, last] (the kernel closes the memfds).
void forget_files_in(unsigned int first, unsigned int last);
// dup2/dup3 (flags as dup3's) where `fd` or `target` is a fleet descriptor. When `fd` is not
// one, the fleet descriptor at `target` is released and kNotFile says "go on as for a kernel one".
inline constexpr int kNotFile = -2;
int dup_file(int fd, int target, int flags, bool as_dup2);
int fcntl_file(int fd, int command, void* argument, int (*real)(int, int, ...));
// Before descriptor 0, 1 or 2 is replaced: its stdio stream writes out what it holds.
void standard_stream_flush(int fd);
// After: stdin, stdout or stderr follows it (a fleet stream for a fleet descriptor).
void standard_stream_follows(int fd);

// The prefix: FLOTILLA_FILES_PREFIX, else /flotilla. Read without allocating: the C library's
// allocator may look at a path (jemalloc: /etc/malloc.conf) before it can allocate.
std::string_view fleet_prefix();
// Whether `path` (relative to `directory`: AT_FDCWD or a descriptor) is in the fleet, and its
// fleet path ("/" for the prefix itself, "." and ".." taken lexically). A path that is not costs
// a comparison and allocates nothing.
bool fleet_path(int directory, const char* path, std::string& out);
// Whether chdir put the working directory in the fleet.
inline std::atomic<bool> g_cwd_in_fleet{false};

// One open file description, in its slot of the descriptor table: every process holding a
// descriptor of it maps the table.
struct SharedState {
  static constexpr std::uint64_t kMagic = 0x31454c4946544c46;  // "FLTFILE1"
  static constexpr std::size_t kBytes = 4096;
  // Free (0), being made by a process ((pid << 2) | 1, so a dead maker's slot can be taken back),
  // or live (2).
  std::atomic<std::uint64_t> use;
  std::uint64_t magic;
  fs::InodeNumber inode;
  std::uint32_t flags;  // access mode and O_APPEND, as opened
  std::uint8_t type;    // fs::FileType
  // The process inside a call that reads or moves the offset (0: none): Linux's f_pos lock.
  std::atomic<pid_t> holder;
  std::atomic<std::uint64_t> offset;
  // The furthest byte written through this description and perhaps not yet published to the server
  // (FLUSH): another process sharing the description reads up to here (the blocks are the server's
  // already, allocated when the writer grew the file). Cut by ftruncate through the description.
  std::atomic<std::uint64_t> written_end;
  char path[kBytes - 56];  // the fleet path it was opened by, for calls relative to a directory
};
static_assert(sizeof(SharedState) <= SharedState::kBytes);

// The stack's table of fleet open file descriptions: `<control socket>.fds`, kSlots slots of
// SharedState, mapped once per process. A description of the table file (opened read-only, so a
// stray write through it fails) whose kernel offset is key(slot) is that slot's descriptor; reads
// through it find nothing (the keys lie past the table's end).
class DescriptorTable {
 public:
  static constexpr std::size_t kSlots = 8192;
  static constexpr std::uint64_t kKeyBase = std::uint64_t{1} << 40;
  static std::uint64_t key(std::size_t slot) { return kKeyBase + slot; }

  // Opens (creating it if needed) and maps the table at `path`; -errno on failure.
  int open(const std::string& path);
  bool is_open() const { return slots_ != nullptr; }
  // A new kernel descriptor for a free slot (O_CLOEXEC from `flags`), the slot live and its
  // state zeroed but for `use`; -errno (ENFILE: every slot is held).
  int make(int flags, std::size_t& slot);
  // Frees `slot` if no description holds it any more (its last descriptor is closed everywhere).
  void release_if_unheld(std::size_t slot);
  // The slot `fd` names when it is a descriptor of this table; nullopt otherwise.
  std::optional<std::size_t> slot_of(int fd) const;
  // Whether `fd`'s file is `table` (the table's stat, taken without opening it).
  static bool names_table(int fd, const struct stat& table);
  SharedState& at(std::size_t slot) { return slots_[slot]; }

 private:
  bool held(std::size_t slot) const;
  // Takes back slots whose descriptions are gone (processes that ended without closing, makers
  // that died); run when every slot looked held.
  void sweep();

  std::string path_;
  int probe_ = -1;  // the table opened read-write: the mapping, and the lock tests
  dev_t device_ = 0;
  ino_t inode_ = 0;
  SharedState* slots_ = nullptr;
  std::size_t cursor_ = 0;
};
// This process's side of an open file description.
struct OpenFile {
  SharedState* state = nullptr;
  std::size_t slot = 0;          // in the descriptor table
  int client_fd = -1;            // at this process's fleet client, made on first use
  std::uint64_t generation = 0;  // Files::generation when client_fd was made
  // getdents64's entries as read at offset 0; later calls go on through them instead of asking
  // the servers again, so reading a directory to its end costs one listing.
  std::vector<fs::DirEntry> listing;
};

// The process's fleet state; one recursive mutex guards it (never taken under Runtime's lock,
// which may be taken under it).
class Files {
 public:
  static Files& get();
  LibraryMutex& mutex() { return mutex_; }

  // The working directory when chdir put it in the fleet (a fleet path), else empty.
  std::string cwd() const;
  void set_cwd(std::string path);

  // Under the lock. The client of this process's seat, leased on first use; null (errno set, one
  // line on stderr the first time) when there is no fleet.
  fs::Client* client();
  std::shared_ptr<OpenFile> at(int fd);
  // The descriptor `file` has at this process's client (opening its inode on first use): >= 0,
  // or -errno.
  int client_fd(OpenFile& file);
  // Grows when this process's client is a new one (a fork, a new lease): client descriptors
  // made under an older generation mean nothing to it.
  std::uint64_t generation() const { return generation_; }
  // The kernel side of the descriptor the next install() gives (O_CLOEXEC from `flags`) is made
  // while the client waits for the server's answer to the open that follows; an open that failed
  // gives it back with discard_prepared().
  void prepare_while_waiting(int flags);
  void discard_prepared();
  // A new kernel descriptor for client descriptor `client_fd`, opened by `path` with `flags`.
  int install(int client_fd, const std::string& path, int flags);
  // `to` (a new number from the kernel) names what `from` names.
  void share(int from, int to);
  // Drops `fd` from the table (its description is released with its last descriptor here).
  void forget(int fd);
  // close(2) of fleet descriptor `fd`: forgets it, closes it, and frees its slot if that was the
  // description's last descriptor anywhere.
  int close(int fd);

  // fork and exec.
  void after_fork_child();
  void adopt_inherited();

 private:
  Files();
  bool attach(int fd, std::vector<std::shared_ptr<OpenFile>>& seen);
  // The descriptor table, opened on first use; null (errno set) when it cannot be.
  DescriptorTable* descriptions();
  // A descriptor of the table and its slot: the prepared one if there is one, else a new one.
  int take_descriptor(int flags, std::size_t& slot);
  // Closes a descriptor of the table nobody was given, and frees its slot.
  void give_back(int fd, std::size_t slot);
  static void make_prepared(void* files);

  // What prepare_while_waiting asked for and, once made, the descriptor (or -errno) and its slot.
  struct Prepared {
    bool wanted = false;
    bool made = false;
    int flags = 0;
    int fd = -1;
    std::size_t slot = 0;
  };

  mutable LibraryMutex mutex_;
  std::string cwd_;
  std::vector<std::shared_ptr<OpenFile>> table_;  // by kernel descriptor
  std::unique_ptr<fs::FleetConnection> connection_;
  DescriptorTable descriptions_;
  std::uint64_t generation_ = 1;
  LeaseRetry lease_retry_{ENOENT};  // what fleet paths say while no seat is leased
  bool complained_ = false;
  Prepared prepared_;
};

// `error` (a negative errno from the fleet) as it goes back to the program; the first ENOSPC says
// why on stderr, once per process.
int fleet_error(int error);

// Raises the description's written_end to `end`; note_cut lowers it to `end` (ftruncate).
void note_written(SharedState& state, std::uint64_t end);
void note_cut(SharedState& state, std::uint64_t end);

// Holds a description's offset for the length of a call, across processes.
class OffsetHold {
 public:
  explicit OffsetHold(SharedState& state);
  ~OffsetHold();
  OffsetHold(const OffsetHold&) = delete;
  OffsetHold& operator=(const OffsetHold&) = delete;

 private:
  SharedState& state_;
};

}  // namespace flotilla::preload
