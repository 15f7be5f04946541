// The interposed file calls: a path under the fleet's prefix (or relative to a fleet directory or
// a working directory in the fleet) and a fleet descriptor go to the fleet's client; anything
// else goes to the kernel after one prefix check. Directory streams and stdio streams of fleet
// files are the library's own (the C library's opendir and fopen open without passing here).
// The interposed names must be the plain ones (stat and stat64, lseek and lseek64 are each
// defined here), not what _FILE_OFFSET_BITS=64 would redirect them to.
#undef _FILE_OFFSET_BITS
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <utime.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <set>

#include "dataplane/clock.hpp"
#include "sockets/preload/calls.hpp"
#include "sockets/preload/files.hpp"
#include "sockets/preload/real_calls.hpp"

namespace flotilla::preload {

namespace {

// st_dev of every fleet file: one file system.
constexpr dev_t kFleetDevice = 0x464c54;

Files& files() { return Files::get(); }

// Runs op(client) under the lock: op returns >= 0 or -errno; the call's shape (-1, errno) out.
template <class Op>
int with_client(Op&& op) {
  Lock lock(files().mutex());
  fs::Client* client = files().client();
  if (client == nullptr) return -1;
  const int result = op(*client);
  return result < 0 ? fail_with(-result) : result;
}

// The same for fleet descriptor `fd`: op(client, client descriptor, description).
template <class Op>
int with_file(int fd, Op&& op) {
  Lock lock(files().mutex());
  const std::shared_ptr<OpenFile> file = files().at(fd);
  if (file == nullptr) return fail_with(EBADF);
  const int client_fd = files().client_fd(*file);
  if (client_fd < 0) return fail_with(-client_fd);
  const int result = op(*files().client(), client_fd, *file);
  return result < 0 ? fail_with(-result) : result;
}

// The process's umask as the interposed umask() last set it; -1 until first read. Reading it
// costs two system calls (umask has no read-only form), so a create reads it once per process.
std::atomic<int> known_umask{-1};

mode_t current_umask() {
  const int known = known_umask.load(std::memory_order_acquire);
  if (known >= 0) return static_cast<mode_t>(known);
  const mode_t mask = REAL(umask)(0);
  REAL(umask)(mask);
  int expected = -1;
  // A umask() that ran meanwhile stored the newer value: keep it.
  known_umask.compare_exchange_strong(expected, static_cast<int>(mask), std::memory_order_acq_rel);
  return mask;
}

std::uint64_t nanoseconds(const timespec& time) {
  return static_cast<std::uint64_t>(time.tv_sec) * 1'000'000'000 + static_cast<std::uint64_t>(time.tv_nsec);
}

void fill_stat(const fs::FileStat& in, struct stat* out) {
  fs::fill_stat(in, *out);
  out->st_dev = kFleetDevice;
}

void fill_statx(const fs::FileStat& in, struct statx* out) {
  *out = {};
  out->stx_mask = STATX_BASIC_STATS;
  out->stx_blksize = static_cast<std::uint32_t>(fs::kBlockBytes);
  out->stx_nlink = in.nlink;
  out->stx_uid = in.uid;
  out->stx_gid = in.gid;
  out->stx_mode = static_cast<std::uint16_t>(in.mode);
  out->stx_ino = in.inode;
  out->stx_size = in.size;
  out->stx_blocks = (in.size + 511) / 512;
  auto stamp = [](std::uint64_t ns) {
    return statx_timestamp{static_cast<std::int64_t>(ns / 1'000'000'000), static_cast<std::uint32_t>(ns % 1'000'000'000), 0};
  };
  out->stx_atime = stamp(in.atime_ns);
  out->stx_mtime = stamp(in.mtime_ns);
  out->stx_ctime = stamp(in.ctime_ns);
  out->stx_dev_major = static_cast<std::uint32_t>(kFleetDevice >> 8);
  out->stx_dev_minor = static_cast<std::uint32_t>(kFleetDevice & 0xff);
}

int stat_path(const std::string& path, bool follow, fs::FileStat& out) {
  return with_client([&](fs::Client& client) { return follow ? client.stat(path, out) : client.lstat(path, out); });
}

int stat_descriptor(int fd, fs::FileStat& out) {
  return with_file(fd, [&](fs::Client& client, int client_fd, OpenFile& file) {
    const int error = client.fstat(client_fd, out);
    // What another process sharing the description wrote and has not published yet.
    if (error == 0) out.size = std::max(out.size, file.state->written_end.load(std::memory_order_acquire));
    return error;
  });
}

// The fleet path a descriptor was opened by.
bool path_of(int fd, std::string& out) {
  Lock lock(files().mutex());
  const std::shared_ptr<OpenFile> file = files().at(fd);
  if (file == nullptr) return false;
  out = file->state->path;
  return true;
}

int open_fleet(const std::string& path, int flags, mode_t mode) {
  if ((flags & O_PATH) != 0) flags = O_RDONLY | (flags & (O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  const int kept = O_ACCMODE | O_CREAT | O_EXCL | O_TRUNC | O_APPEND | O_DIRECTORY | O_NOFOLLOW;
  const mode_t created = (flags & O_CREAT) != 0 ? mode & ~current_umask() & 07777 : 0;
  Lock lock(files().mutex());
  fs::Client* client = files().client();
  if (client == nullptr) return -1;
  files().prepare_while_waiting(flags);
  const int client_fd = client->open(path, flags & kept, created);
  if (client_fd < 0) {
    files().discard_prepared();
    return fail_with(-client_fd);
  }
  const int fd = files().install(client_fd, path, flags);
  if (fd < 0) {
    const int error = errno;
    (void)client->close(client_fd);
    return fail_with(error);
  }
  return fd;
}

mode_t mode_argument(int flags, va_list arguments) {
  return (flags & (O_CREAT | O_TMPFILE)) != 0 ? static_cast<mode_t>(va_arg(arguments, int)) : 0;
}

int open_at(int directory, const char* path, int flags, mode_t mode, bool wide) {
  std::string fleet;
  if (!fleet_path(directory, path, fleet)) {
    if (directory == AT_FDCWD) return wide ? REAL(open64)(path, flags, mode) : REAL(open)(path, flags, mode);
    return wide ? REAL(openat64)(directory, path, flags, mode) : REAL(openat)(directory, path, flags, mode);
  }
  return open_fleet(fleet, flags, mode);
}

// Whether `mode` (R_OK, W_OK, X_OK) is allowed on a file with `stat`, for this process's ids.
bool allowed(const fs::FileStat& stat, int mode, bool effective) {
  if (mode == F_OK) return true;
  const uid_t uid = effective ? ::geteuid() : ::getuid();
  const gid_t gid = effective ? ::getegid() : ::getgid();
  const bool any_execute = (stat.mode & 0111) != 0 || (stat.mode & S_IFMT) == S_IFDIR;
  if (uid == 0) return (mode & X_OK) == 0 || any_execute;
  const unsigned shift = uid == stat.uid ? 6 : gid == stat.gid ? 3 : 0;
  const unsigned bits = (stat.mode >> shift) & 7;
  return ((mode & R_OK) == 0 || (bits & 4) != 0) && ((mode & W_OK) == 0 || (bits & 2) != 0) &&
         ((mode & X_OK) == 0 || (bits & 1) != 0);
}

int access_fleet(const std::string& path, int mode, bool effective, bool follow) {
  fs::FileStat stat;
  if (stat_path(path, follow, stat) != 0) return -1;
  return allowed(stat, mode, effective) ? 0 : fail_with(EACCES);
}

int rename_fleet(int from_directory, const char* from, int to_directory, const char* to, unsigned int flags) {
  std::string source;
  std::string target;
  const bool source_fleet = fleet_path(from_directory, from, source);
  const bool target_fleet = fleet_path(to_directory, to, target);
  if (!source_fleet && !target_fleet) return REAL(renameat2)(from_directory, from, to_directory, to, flags);
  if (source_fleet != target_fleet) return fail_with(EXDEV);
  if ((flags & ~static_cast<unsigned int>(RENAME_NOREPLACE)) != 0) return fail_with(EINVAL);
  return with_client([&](fs::Client& client) {
    if ((flags & RENAME_NOREPLACE) != 0) {
      fs::FileStat existing;
      if (client.lstat(target, existing) == 0) return -EEXIST;
    }
    return client.rename(source, target);
  });
}

int unlink_fleet(const std::string& path, bool directory) {
  return with_client([&](fs::Client& client) { return directory ? client.rmdir(path) : client.unlink(path); });
}

// times[0] and [1] as utimensat takes them (null: now; UTIME_NOW, UTIME_OMIT), in nanoseconds for
// the servers; an omitted time is left to the server (kTimeOmit): no stat first (tar's futimens
// omits atime).
struct FleetTimes {
  std::uint64_t access_ns;
  std::uint64_t modify_ns;
  bool none() const { return access_ns == fs::kTimeOmit && modify_ns == fs::kTimeOmit; }
};
FleetTimes fleet_times(const timespec* times) {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  const auto pick = [&](int i) {
    if (times == nullptr || times[i].tv_nsec == UTIME_NOW) return nanoseconds(now);
    if (times[i].tv_nsec == UTIME_OMIT) return fs::kTimeOmit;
    return nanoseconds(times[i]);
  };
  return {pick(0), pick(1)};
}

int set_times(const std::string& path, const timespec* times, bool follow) {
  return with_client([&](fs::Client& client) {
    const FleetTimes wanted = fleet_times(times);
    if (wanted.none()) {
      fs::FileStat current;  // as Linux: nothing changes, but the file must be there
      return follow ? client.stat(path, current) : client.lstat(path, current);
    }
    return client.utimens(path, wanted.access_ns, wanted.modify_ns, follow);
  });
}

int change_owner(const std::string& path, uid_t uid, gid_t gid, bool follow) {
  return with_client([&](fs::Client& client) {
    fs::FileStat current;
    if (uid == static_cast<uid_t>(-1) || gid == static_cast<gid_t>(-1)) {
      const int found = follow ? client.stat(path, current) : client.lstat(path, current);
      if (found != 0) return found;
    }
    return client.chown(path, uid == static_cast<uid_t>(-1) ? current.uid : uid,
                        gid == static_cast<gid_t>(-1) ? current.gid : gid, follow);
  });
}

ssize_t readlink_fleet(const std::string& path, char* buffer, std::size_t size) {
  std::string target;
  if (with_client([&](fs::Client& client) { return client.readlink(path, target); }) != 0) return -1;
  const std::size_t length = std::min(size, target.size());
  std::memcpy(buffer, target.data(), length);
  return static_cast<ssize_t>(length);
}

std::int64_t seek_file(int fd, std::int64_t offset, int whence) {
  Lock lock(files().mutex());
  const std::shared_ptr<OpenFile> file = files().at(fd);
  if (file == nullptr) return fail_with(EBADF);
  OffsetHold hold(*file->state);
  std::int64_t base = 0;
  if (whence == SEEK_CUR) {
    base = static_cast<std::int64_t>(file->state->offset.load());
  } else if (whence == SEEK_END || whence == SEEK_DATA || whence == SEEK_HOLE) {
    fs::FileStat stat;
    if (stat_descriptor(fd, stat) != 0) return -1;
    const auto size = static_cast<std::int64_t>(stat.size);
    if (whence != SEEK_END && offset >= size) return fail_with(ENXIO);
    base = whence == SEEK_END ? size : 0;
    if (whence == SEEK_HOLE) {  // no holes: the end is the only one
      base = size;
      offset = 0;
    }
  } else if (whence != SEEK_SET) {
    return fail_with(EINVAL);
  }
  if (base + offset < 0) return fail_with(EINVAL);
  file->state->offset.store(static_cast<std::uint64_t>(base + offset));
  return base + offset;
}

ssize_t pread_file(int fd, void* buffer, std::size_t length, std::int64_t offset) {
  if (offset < 0) return fail_with(EINVAL);
  return with_file(fd, [&](fs::Client& client, int client_fd, OpenFile& file) -> int {
    const std::span<std::byte> out(static_cast<std::byte*>(buffer), length);
    ssize_t got = client.pread(client_fd, out, static_cast<std::uint64_t>(offset));
    if (got == 0 && length > 0) {
      if (int error = client.refresh(client_fd, file.state->written_end.load(std::memory_order_acquire)); error != 0) {
        return error;
      }
      got = client.pread(client_fd, out, static_cast<std::uint64_t>(offset));
    }
    return static_cast<int>(got);
  });
}

ssize_t pwrite_file(int fd, const void* buffer, std::size_t length, std::int64_t offset) {
  if (offset < 0) return fail_with(EINVAL);
  return with_file(fd, [&](fs::Client& client, int client_fd, OpenFile& file) -> int {
    const ssize_t put =
        client.pwrite(client_fd, std::span(static_cast<const std::byte*>(buffer), length), static_cast<std::uint64_t>(offset));
    if (put < 0) return fleet_error(static_cast<int>(put));
    if ((file.state->flags & O_APPEND) != 0) {
      if (int error = client.fsync(client_fd); error != 0) return error;
    } else {
      note_written(*file.state, static_cast<std::uint64_t>(offset) + static_cast<std::uint64_t>(put));
    }
    return static_cast<int>(put);
  });
}

// Directory streams of fleet directories. A DIR* the C library made is never one of these: the
// set says which are ours, and a program with none of them open pays one load.
//
// opendir makes no kernel descriptor until dirfd() asks for one: a walker (find, os.walk) opens,
// lists and closes every directory, and a descriptor of the table costs an open(2), an lseek and
// a lock at the open, and a close(2) and a lock test at the close; the listing needs only the
// client's own descriptor of the directory (which costs no message: Client::openat).
struct FleetDirectory {
  int fd = -1;  // the kernel descriptor: fdopendir's, or made for dirfd()
  // Without one: the client's descriptor, the client generation it belongs to, and the path that
  // opens it again in a forked child.
  int client_fd = -1;
  std::uint64_t generation = 0;
  std::string path;
  std::vector<fs::DirEntry> entries;
  bool listed = false;
  std::size_t next = 0;
  dirent64 current{};
};
std::atomic<int> g_open_directories{0};
std::set<const void*> g_directories;  // under the Files lock

FleetDirectory* fleet_directory(const void* stream) {
  if (g_open_directories.load(std::memory_order_relaxed) == 0) return nullptr;
  Lock lock(files().mutex());
  return g_directories.contains(stream) ? static_cast<FleetDirectory*>(const_cast<void*>(stream)) : nullptr;
}

DIR* open_directory_stream(int fd) {
  Lock lock(files().mutex());
  const std::shared_ptr<OpenFile> file = files().at(fd);
  if (file == nullptr) {
    errno = EBADF;
    return nullptr;
  }
  if (static_cast<fs::FileType>(file->state->type) != fs::FileType::directory) {
    errno = ENOTDIR;
    return nullptr;
  }
  auto* directory = new FleetDirectory();
  directory->fd = fd;
  g_directories.insert(directory);
  g_open_directories.fetch_add(1, std::memory_order_relaxed);
  return reinterpret_cast<DIR*>(directory);
}

unsigned char dirent_type(fs::FileType type) {
  return type == fs::FileType::directory ? DT_DIR : type == fs::FileType::symlink ? DT_LNK : DT_REG;
}

// Under the Files lock: the client descriptor of a stream with no kernel descriptor, opened again
// by its path when it belongs to another client generation (a forked child's). -errno on failure.
int stream_client_fd(FleetDirectory& directory) {
  fs::Client* client = files().client();
  if (client == nullptr) return -errno;
  if (directory.client_fd >= 0 && directory.generation == files().generation()) return directory.client_fd;
  const int opened = client->open(directory.path, O_RDONLY | O_DIRECTORY);
  if (opened < 0) return opened;
  directory.client_fd = opened;
  directory.generation = files().generation();
  return opened;
}

// Lists the directory, "." and ".." first, as the kernel does.
int list_into(fs::Client& client, int client_fd, std::vector<fs::DirEntry>& out) {
  fs::SharedDescriptor described;
  if (int error = client.describe_fd(client_fd, described); error != 0) return error;
  out.push_back(fs::DirEntry{".", described.inode, fs::FileType::directory});
  out.push_back(fs::DirEntry{"..", described.inode, fs::FileType::directory});
  return client.readdir_fd(client_fd, out);
}

dirent64* next_entry(FleetDirectory& directory) {
  Lock lock(files().mutex());
  if (!directory.listed) {
    directory.entries.clear();
    int listed = 0;
    if (directory.fd >= 0) {
      listed = with_file(directory.fd, [&](fs::Client& client, int client_fd, OpenFile&) {
        return list_into(client, client_fd, directory.entries);
      });
    } else {
      listed = with_client([&](fs::Client& client) {
        const int client_fd = stream_client_fd(directory);
        return client_fd < 0 ? client_fd : list_into(client, client_fd, directory.entries);
      });
    }
    if (listed != 0) return nullptr;
    directory.listed = true;
    directory.next = 0;
  }
  if (directory.next >= directory.entries.size()) return nullptr;
  const fs::DirEntry& entry = directory.entries[directory.next];
  dirent64& out = directory.current;
  out = {};
  out.d_ino = entry.inode;
  out.d_off = static_cast<off64_t>(++directory.next);
  out.d_reclen = sizeof(dirent64);
  out.d_type = dirent_type(entry.type);
  const std::size_t length = std::min(entry.name.size(), sizeof(out.d_name) - 1);
  std::memcpy(out.d_name, entry.name.data(), length);
  return &out;
}

// stdio streams of fleet descriptors: fopencookie streams whose fileno() is the descriptor.
ssize_t cookie_read(void* cookie, char* buffer, std::size_t length) {
  return read_file(static_cast<int>(reinterpret_cast<std::intptr_t>(cookie)), buffer, length);
}
ssize_t cookie_write(void* cookie, const char* buffer, std::size_t length) {
  const ssize_t put = write_file(static_cast<int>(reinterpret_cast<std::intptr_t>(cookie)), buffer, length);
  return put < 0 ? 0 : put;  // stdio takes 0 as the error
}
int cookie_seek(void* cookie, off64_t* position, int whence) {
  const std::int64_t at = seek_file(static_cast<int>(reinterpret_cast<std::intptr_t>(cookie)), *position, whence);
  if (at < 0) return -1;
  *position = at;
  return 0;
}
int cookie_close(void* cookie) { return close_file(static_cast<int>(reinterpret_cast<std::intptr_t>(cookie))); }

// stdio streams of Flotilla sockets at 0, 1 and 2 (an inetd-style child's stdin and stdout): the
// C library's own streams write with its internal write, which would reach the kernel's eventfd
// under the socket's number (EINVAL), so they go through the interposed calls instead.
ssize_t socket_cookie_read(void* cookie, char* buffer, std::size_t length) {
  return ::read(static_cast<int>(reinterpret_cast<std::intptr_t>(cookie)), buffer, length);
}
ssize_t socket_cookie_write(void* cookie, const char* buffer, std::size_t length) {
  const ssize_t put = ::write(static_cast<int>(reinterpret_cast<std::intptr_t>(cookie)), buffer, length);
  return put < 0 ? 0 : put;  // stdio takes 0 as the error
}

int socket_cookie_close(void* cookie) { return ::close(static_cast<int>(reinterpret_cast<std::intptr_t>(cookie))); }

FILE* socket_stream(int fd, const char* mode) {
  FILE* stream = ::fopencookie(reinterpret_cast<void*>(static_cast<std::intptr_t>(fd)), mode,
                               cookie_io_functions_t{socket_cookie_read, socket_cookie_write, nullptr,
                                                     socket_cookie_close});
  if (stream != nullptr) stream->_fileno = fd;
  return stream;
}

FILE* file_stream(int fd, const char* mode) {
  FILE* stream = ::fopencookie(reinterpret_cast<void*>(static_cast<std::intptr_t>(fd)), mode,
                               cookie_io_functions_t{cookie_read, cookie_write, cookie_seek, cookie_close});
  if (stream != nullptr) stream->_fileno = fd;  // fileno() answers the descriptor, as for any file
  return stream;
}

int open_flags_of(const char* mode) {
  int flags = 0;
  switch (mode[0]) {
    case 'r': flags = O_RDONLY; break;
    case 'w': flags = O_WRONLY | O_CREAT | O_TRUNC; break;
    case 'a': flags = O_WRONLY | O_CREAT | O_APPEND; break;
    default: return -1;
  }
  for (const char* c = mode + 1; *c != '\0' && *c != ','; ++c) {
    if (*c == '+') flags = (flags & ~O_ACCMODE) | O_RDWR;
    if (*c == 'x') flags |= O_EXCL;
    if (*c == 'e') flags |= O_CLOEXEC;
  }
  return flags;
}

// stdin, stdout and stderr: the C library's, and the streams made for a fleet descriptor or a
// socket at 0, 1 and 2 (with what each was made for).
FILE* g_kernel_streams[3] = {nullptr, nullptr, nullptr};
FILE* g_fleet_streams[3] = {nullptr, nullptr, nullptr};
bool g_streams_of_socket[3] = {false, false, false};

FILE*& standard_stream(int fd) { return fd == 0 ? stdin : fd == 1 ? stdout : stderr; }

// A directory the kernel's working directory is while the program's is in the fleet: an exec'd
// program that finds itself there takes $PWD (which shells and chdir here set) as its own.
constexpr char kFleetCwdAnchor[] = "/tmp/.flotilla-fleet-cwd";

void adopt_inherited_cwd() {
  const char* pwd = std::getenv("PWD");
  if (pwd == nullptr) return;
  std::string fleet;
  if (pwd[0] != '/' || !fleet_path(AT_FDCWD, pwd, fleet)) return;
  char kernel[sizeof(kFleetCwdAnchor) + 1];
  if (REAL(getcwd)(kernel, sizeof(kernel)) == nullptr || std::strcmp(kernel, kFleetCwdAnchor) != 0) return;
  files().set_cwd(fleet);
}

__attribute__((constructor)) void adopt_inherited_files() {
  files().adopt_inherited();
  for (int fd = 0; fd <= 2; ++fd) standard_stream_follows(fd);
  adopt_inherited_cwd();
}

}  // namespace

void standard_stream_flush(int fd) {
  if (fd == 1 || fd == 2) ::fflush(standard_stream(fd));
}

void standard_stream_follows(int fd) {
  if (fd < 0 || fd > 2) return;
  FILE*& stream = standard_stream(fd);
  // The first call comes before any stream was replaced (the constructors call it).
  if (g_kernel_streams[fd] == nullptr) g_kernel_streams[fd] = stream;
  const bool socket = is_socket(fd);
  if (!is_file(fd) && !socket) {
    if (stream == g_fleet_streams[fd]) stream = g_kernel_streams[fd];
    return;
  }
  if (stream == g_fleet_streams[fd] && stream != nullptr && g_streams_of_socket[fd] == socket) return;
  FILE* made = socket ? socket_stream(fd, fd == 0 ? "r" : "w") : file_stream(fd, fd == 0 ? "r" : "w");
  if (made == nullptr) return;
  if (fd == 2) ::setvbuf(made, nullptr, _IONBF, 0);
  g_fleet_streams[fd] = made;
  g_streams_of_socket[fd] = socket;
  stream = made;
}

}  // namespace flotilla::preload

using namespace flotilla::preload;
namespace fs = flotilla::fs;

// open and its variants.
FLOTILLA_EXPORT int open(const char* path, int flags, ...) {
  va_list arguments;
  va_start(arguments, flags);
  const mode_t mode = mode_argument(flags, arguments);
  va_end(arguments);
  return open_at(AT_FDCWD, path, flags, mode, false);
}
FLOTILLA_EXPORT int open64(const char* path, int flags, ...) {
  va_list arguments;
  va_start(arguments, flags);
  const mode_t mode = mode_argument(flags, arguments);
  va_end(arguments);
  return open_at(AT_FDCWD, path, flags, mode, true);
}
FLOTILLA_EXPORT int openat(int directory, const char* path, int flags, ...) {
  va_list arguments;
  va_start(arguments, flags);
  const mode_t mode = mode_argument(flags, arguments);
  va_end(arguments);
  return open_at(directory, path, flags, mode, false);
}
FLOTILLA_EXPORT int openat64(int directory, const char* path, int flags, ...) {
  va_list arguments;
  va_start(arguments, flags);
  const mode_t mode = mode_argument(flags, arguments);
  va_end(arguments);
  return open_at(directory, path, flags, mode, true);
}
// The fortified entry points (-D_FORTIFY_SOURCE): no mode.
FLOTILLA_EXPORT int __open_2(const char* path, int flags) { return open_at(AT_FDCWD, path, flags, 0, false); }
FLOTILLA_EXPORT int __open64_2(const char* path, int flags) { return open_at(AT_FDCWD, path, flags, 0, true); }
FLOTILLA_EXPORT int __openat_2(int directory, const char* path, int flags) {
  return open_at(directory, path, flags, 0, false);
}
FLOTILLA_EXPORT int __openat64_2(int directory, const char* path, int flags) {
  return open_at(directory, path, flags, 0, true);
}
FLOTILLA_EXPORT int creat(const char* path, mode_t mode) {
  return open_at(AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC, mode, false);
}
FLOTILLA_EXPORT int creat64(const char* path, mode_t mode) {
  return open_at(AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC, mode, true);
}

// Positioned data and the offset.
FLOTILLA_EXPORT ssize_t pread(int fd, void* buffer, size_t length, off_t offset) {
  if (!is_file(fd)) return REAL(pread)(fd, buffer, length, offset);
  return pread_file(fd, buffer, length, offset);
}
FLOTILLA_EXPORT ssize_t pread64(int fd, void* buffer, size_t length, off64_t offset) {
  if (!is_file(fd)) return REAL(pread64)(fd, buffer, length, offset);
  return pread_file(fd, buffer, length, offset);
}
FLOTILLA_EXPORT ssize_t pwrite(int fd, const void* buffer, size_t length, off_t offset) {
  if (!is_file(fd)) return REAL(pwrite)(fd, buffer, length, offset);
  return pwrite_file(fd, buffer, length, offset);
}
FLOTILLA_EXPORT ssize_t pwrite64(int fd, const void* buffer, size_t length, off64_t offset) {
  if (!is_file(fd)) return REAL(pwrite64)(fd, buffer, length, offset);
  return pwrite_file(fd, buffer, length, offset);
}
FLOTILLA_EXPORT off_t lseek(int fd, off_t offset, int whence) {
  if (!is_file(fd)) return REAL(lseek)(fd, offset, whence);
  return seek_file(fd, offset, whence);
}
FLOTILLA_EXPORT off64_t lseek64(int fd, off64_t offset, int whence) {
  if (!is_file(fd)) return REAL(lseek64)(fd, offset, whence);
  return seek_file(fd, offset, whence);
}
FLOTILLA_EXPORT int ftruncate(int fd, off_t length) {
  if (!is_file(fd)) return REAL(ftruncate)(fd, length);
  if (length < 0) return fail_with(EINVAL);
  return with_file(fd, [&](fs::Client& client, int client_fd, OpenFile& file) {
    const int error = fleet_error(client.ftruncate(client_fd, static_cast<std::uint64_t>(length)));
    if (error == 0) note_cut(*file.state, static_cast<std::uint64_t>(length));
    return error;
  });
}
FLOTILLA_EXPORT int ftruncate64(int fd, off64_t length) { return ftruncate(fd, length); }
FLOTILLA_EXPORT int fsync(int fd) {
  if (!is_file(fd)) return REAL(fsync)(fd);
  return with_file(fd, [](fs::Client& client, int client_fd, OpenFile&) { return client.fsync(client_fd); });
}
FLOTILLA_EXPORT int fdatasync(int fd) {
  if (!is_file(fd)) return REAL(fdatasync)(fd);
  return fsync(fd);
}
FLOTILLA_EXPORT ssize_t copy_file_range(int in, off64_t* in_offset, int out, off64_t* out_offset, size_t length,
                                        unsigned int flags) {
  if (!is_file(in) && !is_file(out)) return REAL(copy_file_range)(in, in_offset, out, out_offset, length, flags);
  return fail_with(EXDEV);  // callers copy with read and write
}
FLOTILLA_EXPORT void* mmap(void* address, size_t length, int protection, int flags, int fd, off_t offset) {
  if (!is_file(fd) || (flags & MAP_ANONYMOUS) != 0) return REAL(mmap)(address, length, protection, flags, fd, offset);
  // A private copy of the file's bytes: fleet files have no pages the kernel could share.
  if ((flags & MAP_SHARED) != 0 && (protection & PROT_WRITE) != 0) {
    errno = ENODEV;
    return MAP_FAILED;
  }
  void* copy = REAL(mmap)(address, length, PROT_READ | PROT_WRITE, (flags & ~MAP_SHARED) | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (copy == MAP_FAILED) return copy;
  std::size_t done = 0;
  while (done < length) {
    const ssize_t got = pread_file(fd, static_cast<char*>(copy) + done, length - done, offset + static_cast<off_t>(done));
    if (got < 0) {
      const int error = errno;
      ::munmap(copy, length);
      errno = error;
      return MAP_FAILED;
    }
    if (got == 0) break;
    done += static_cast<std::size_t>(got);
  }
  if (::mprotect(copy, length, protection) != 0) {
    const int error = errno;
    ::munmap(copy, length);
    errno = error;
    return MAP_FAILED;
  }
  return copy;
}
FLOTILLA_EXPORT void* mmap64(void* address, size_t length, int protection, int flags, int fd, off64_t offset) {
  return mmap(address, length, protection, flags, fd, offset);
}

// stat and its variants.
FLOTILLA_EXPORT int fstat(int fd, struct stat* out) {
  if (is_socket(fd)) return socket_status(REAL(fstat)(fd, out), out->st_mode);
  if (!is_file(fd)) return REAL(fstat)(fd, out);
  fs::FileStat stat;
  if (stat_descriptor(fd, stat) != 0) return -1;
  fill_stat(stat, out);
  return 0;
}
FLOTILLA_EXPORT int fstat64(int fd, struct stat64* out) {
  if (is_socket(fd)) return socket_status(REAL(fstat64)(fd, out), out->st_mode);
  if (!is_file(fd)) return REAL(fstat64)(fd, out);
  return fstat(fd, reinterpret_cast<struct stat*>(out));
}
FLOTILLA_EXPORT int fstatat(int directory, const char* path, struct stat* out, int flags) {
  if ((flags & AT_EMPTY_PATH) != 0 && path[0] == '\0' && is_file(directory)) return fstat(directory, out);
  std::string fleet;
  if (!fleet_path(directory, path, fleet)) return REAL(fstatat)(directory, path, out, flags);
  fs::FileStat stat;
  if (stat_path(fleet, (flags & AT_SYMLINK_NOFOLLOW) == 0, stat) != 0) return -1;
  fill_stat(stat, out);
  return 0;
}
FLOTILLA_EXPORT int fstatat64(int directory, const char* path, struct stat64* out, int flags) {
  return fstatat(directory, path, reinterpret_cast<struct stat*>(out), flags);
}
FLOTILLA_EXPORT int stat(const char* path, struct stat* out) { return fstatat(AT_FDCWD, path, out, 0); }
FLOTILLA_EXPORT int stat64(const char* path, struct stat64* out) {
  return fstatat(AT_FDCWD, path, reinterpret_cast<struct stat*>(out), 0);
}
FLOTILLA_EXPORT int lstat(const char* path, struct stat* out) { return fstatat(AT_FDCWD, path, out, AT_SYMLINK_NOFOLLOW); }
FLOTILLA_EXPORT int lstat64(const char* path, struct stat64* out) {
  return fstatat(AT_FDCWD, path, reinterpret_cast<struct stat*>(out), AT_SYMLINK_NOFOLLOW);
}
FLOTILLA_EXPORT int statx(int directory, const char* path, int flags, unsigned int mask, struct statx* out) {
  fs::FileStat stat;
  if ((flags & AT_EMPTY_PATH) != 0 && path[0] == '\0' && is_file(directory)) {
    if (stat_descriptor(directory, stat) != 0) return -1;
    fill_statx(stat, out);
    return 0;
  }
  std::string fleet;
  if (!fleet_path(directory, path, fleet)) return REAL(statx)(directory, path, flags, mask, out);
  if (stat_path(fleet, (flags & AT_SYMLINK_NOFOLLOW) == 0, stat) != 0) return -1;
  fill_statx(stat, out);
  return 0;
}

// Access checks.
FLOTILLA_EXPORT int faccessat(int directory, const char* path, int mode, int flags) {
  std::string fleet;
  if (!fleet_path(directory, path, fleet)) return REAL(faccessat)(directory, path, mode, flags);
  return access_fleet(fleet, mode, (flags & AT_EACCESS) != 0, (flags & AT_SYMLINK_NOFOLLOW) == 0);
}
FLOTILLA_EXPORT int access(const char* path, int mode) {
  std::string fleet;
  if (!fleet_path(AT_FDCWD, path, fleet)) return REAL(access)(path, mode);
  return access_fleet(fleet, mode, false, true);
}
FLOTILLA_EXPORT int euidaccess(const char* path, int mode) {
  std::string fleet;
  if (!fleet_path(AT_FDCWD, path, fleet)) return REAL(euidaccess)(path, mode);
  return access_fleet(fleet, mode, true, true);
}
FLOTILLA_EXPORT int eaccess(const char* path, int mode) { return euidaccess(path, mode); }

// Names.
FLOTILLA_EXPORT int unlinkat(int directory, const char* path, int flags) {
  std::string fleet;
  if (!fleet_path(directory, path, fleet)) return REAL(unlinkat)(directory, path, flags);
  return unlink_fleet(fleet, (flags & AT_REMOVEDIR) != 0);
}
FLOTILLA_EXPORT int unlink(const char* path) { return unlinkat(AT_FDCWD, path, 0); }
FLOTILLA_EXPORT int rmdir(const char* path) { return unlinkat(AT_FDCWD, path, AT_REMOVEDIR); }
FLOTILLA_EXPORT int mkdirat(int directory, const char* path, mode_t mode) {
  std::string fleet;
  if (!fleet_path(directory, path, fleet)) return REAL(mkdirat)(directory, path, mode);
  const mode_t created = mode & ~current_umask() & 07777;
  return with_client([&](fs::Client& client) { return client.mkdir(fleet, created); });
}
FLOTILLA_EXPORT int mkdir(const char* path, mode_t mode) { return mkdirat(AT_FDCWD, path, mode); }

// Interposed only to keep the umask known without reading it at every create.
FLOTILLA_EXPORT mode_t umask(mode_t mask) {
  const mode_t previous = REAL(umask)(mask);
  known_umask.store(static_cast<int>(mask & 0777), std::memory_order_release);
  return previous;
}
FLOTILLA_EXPORT int renameat2(int from_directory, const char* from, int to_directory, const char* to, unsigned int flags) {
  return rename_fleet(from_directory, from, to_directory, to, flags);
}
FLOTILLA_EXPORT int renameat(int from_directory, const char* from, int to_directory, const char* to) {
  return rename_fleet(from_directory, from, to_directory, to, 0);
}
FLOTILLA_EXPORT int rename(const char* from, const char* to) { return rename_fleet(AT_FDCWD, from, AT_FDCWD, to, 0); }
FLOTILLA_EXPORT int linkat(int from_directory, const char* from, int to_directory, const char* to, int flags) {
  std::string source;
  std::string target;
  const bool source_fleet = fleet_path(from_directory, from, source);
  const bool target_fleet = fleet_path(to_directory, to, target);
  if (!source_fleet && !target_fleet) return REAL(linkat)(from_directory, from, to_directory, to, flags);
  return fail_with(source_fleet == target_fleet ? EPERM : EXDEV);  // the fleet has no hard links
}
FLOTILLA_EXPORT int link(const char* from, const char* to) { return linkat(AT_FDCWD, from, AT_FDCWD, to, 0); }
FLOTILLA_EXPORT int symlinkat(const char* target, int directory, const char* path) {
  std::string fleet;
  if (!fleet_path(directory, path, fleet)) return REAL(symlinkat)(target, directory, path);
  return with_client([&](fs::Client& client) { return client.symlink(target, fleet); });
}
FLOTILLA_EXPORT int symlink(const char* target, const char* path) { return symlinkat(target, AT_FDCWD, path); }
FLOTILLA_EXPORT ssize_t readlinkat(int directory, const char* path, char* buffer, size_t size) {
  std::string fleet;
  if (!fleet_path(directory, path, fleet)) return REAL(readlinkat)(directory, path, buffer, size);
  return readlink_fleet(fleet, buffer, size);
}
FLOTILLA_EXPORT ssize_t readlink(const char* path, char* buffer, size_t size) {
  return readlinkat(AT_FDCWD, path, buffer, size);
}
FLOTILLA_EXPORT int truncate(const char* path, off_t length) {
  std::string fleet;
  if (!fleet_path(AT_FDCWD, path, fleet)) return REAL(truncate)(path, length);
  if (length < 0) return fail_with(EINVAL);
  return with_client([&](fs::Client& client) { return client.truncate(fleet, static_cast<std::uint64_t>(length)); });
}
FLOTILLA_EXPORT int truncate64(const char* path, off64_t length) { return truncate(path, length); }

// Modes, owners, times.
FLOTILLA_EXPORT int fchmodat(int directory, const char* path, mode_t mode, int flags) {
  std::string fleet;
  if (!fleet_path(directory, path, fleet)) return REAL(fchmodat)(directory, path, mode, flags);
  return with_client([&](fs::Client& client) {
    if ((flags & AT_SYMLINK_NOFOLLOW) != 0) {
      fs::FileStat stat;
      if (int error = client.lstat(fleet, stat); error != 0) return error;
      if (stat.type == fs::FileType::symlink) return -EOPNOTSUPP;  // as Linux: a symlink has no mode of its own
    }
    return client.chmod(fleet, mode & 07777);
  });
}
FLOTILLA_EXPORT int chmod(const char* path, mode_t mode) { return fchmodat(AT_FDCWD, path, mode, 0); }
// By descriptor, the descriptor's file wherever its path went since (renamed, unlinked), as on Linux.
FLOTILLA_EXPORT int fchmod(int fd, mode_t mode) {
  if (!is_file(fd)) return REAL(fchmod)(fd, mode);
  return with_file(fd, [&](fs::Client& client, int client_fd, OpenFile&) { return client.fchmod(client_fd, mode & 07777); });
}
FLOTILLA_EXPORT int fchownat(int directory, const char* path, uid_t uid, gid_t gid, int flags) {
  if ((flags & AT_EMPTY_PATH) != 0 && path[0] == '\0' && is_file(directory)) {
    return fchown(directory, uid, gid);
  }
  std::string fleet;
  if (!fleet_path(directory, path, fleet)) return REAL(fchownat)(directory, path, uid, gid, flags);
  return change_owner(fleet, uid, gid, (flags & AT_SYMLINK_NOFOLLOW) == 0);
}
FLOTILLA_EXPORT int chown(const char* path, uid_t uid, gid_t gid) { return fchownat(AT_FDCWD, path, uid, gid, 0); }
FLOTILLA_EXPORT int lchown(const char* path, uid_t uid, gid_t gid) {
  return fchownat(AT_FDCWD, path, uid, gid, AT_SYMLINK_NOFOLLOW);
}
FLOTILLA_EXPORT int fchown(int fd, uid_t uid, gid_t gid) {
  if (!is_file(fd)) return REAL(fchown)(fd, uid, gid);
  return with_file(fd, [&](fs::Client& client, int client_fd, OpenFile&) {
    fs::FileStat current;
    if (uid == static_cast<uid_t>(-1) || gid == static_cast<gid_t>(-1)) {
      if (const int found = client.fstat(client_fd, current); found != 0) return found;
    }
    return client.fchown(client_fd, uid == static_cast<uid_t>(-1) ? current.uid : uid,
                         gid == static_cast<gid_t>(-1) ? current.gid : gid);
  });
}
FLOTILLA_EXPORT int utimensat(int directory, const char* path, const timespec times[2], int flags) {
  std::string fleet;
  if (!fleet_path(directory, path, fleet)) return REAL(utimensat)(directory, path, times, flags);
  return set_times(fleet, times, (flags & AT_SYMLINK_NOFOLLOW) == 0);
}
FLOTILLA_EXPORT int futimens(int fd, const timespec times[2]) {
  if (!is_file(fd)) return REAL(futimens)(fd, times);
  return with_file(fd, [&](fs::Client& client, int client_fd, OpenFile&) {
    const FleetTimes wanted = fleet_times(times);
    fs::FileStat current;  // nothing to change: the descriptor must still be good
    return wanted.none() ? client.fstat(client_fd, current) : client.futimens(client_fd, wanted.access_ns, wanted.modify_ns);
  });
}
FLOTILLA_EXPORT int utime(const char* path, const utimbuf* times) {
  std::string fleet;
  if (!fleet_path(AT_FDCWD, path, fleet)) return REAL(utime)(path, times);
  if (times == nullptr) return set_times(fleet, nullptr, true);
  const timespec both[2] = {{times->actime, 0}, {times->modtime, 0}};
  return set_times(fleet, both, true);
}
FLOTILLA_EXPORT int utimes(const char* path, const timeval times[2]) {
  std::string fleet;
  if (!fleet_path(AT_FDCWD, path, fleet)) return REAL(utimes)(path, times);
  if (times == nullptr) return set_times(fleet, nullptr, true);
  const timespec both[2] = {{times[0].tv_sec, times[0].tv_usec * 1000}, {times[1].tv_sec, times[1].tv_usec * 1000}};
  return set_times(fleet, both, true);
}

// The working directory: one in the fleet is this process's own (the kernel's stays where it was).
FLOTILLA_EXPORT int chdir(const char* path) {
  std::string fleet;
  if (!fleet_path(AT_FDCWD, path, fleet)) {
    const int changed = REAL(chdir)(path);
    if (changed == 0 && g_cwd_in_fleet.load()) files().set_cwd({});
    return changed;
  }
  fs::FileStat stat;
  if (stat_path(fleet, true, stat) != 0) return -1;
  if (stat.type != fs::FileType::directory) return fail_with(ENOTDIR);
  // The kernel's goes to the anchor, and PWD says where, for the programs this one execs.
  if (REAL(mkdir)(kFleetCwdAnchor, 0755) != 0 && errno != EEXIST) return -1;
  if (REAL(chdir)(kFleetCwdAnchor) != 0) return -1;
  files().set_cwd(fleet);
  ::setenv("PWD", (fleet == "/" ? std::string(fleet_prefix()) : std::string(fleet_prefix()) + fleet).c_str(), 1);
  return 0;
}
FLOTILLA_EXPORT int fchdir(int fd) {
  if (!is_file(fd)) {
    const int changed = REAL(fchdir)(fd);
    if (changed == 0 && g_cwd_in_fleet.load()) files().set_cwd({});
    return changed;
  }
  std::string path;
  if (!path_of(fd, path)) return fail_with(EBADF);
  return chdir((std::string(fleet_prefix()) + path).c_str());
}
FLOTILLA_EXPORT char* getcwd(char* buffer, size_t size) {
  if (!g_cwd_in_fleet.load()) return REAL(getcwd)(buffer, size);
  const std::string cwd = files().cwd();
  if (cwd.empty()) return REAL(getcwd)(buffer, size);
  const std::string full = cwd == "/" ? std::string(fleet_prefix()) : std::string(fleet_prefix()) + cwd;
  if (buffer == nullptr) {
    buffer = static_cast<char*>(std::malloc(std::max(size, full.size() + 1)));
    if (buffer == nullptr) {
      errno = ENOMEM;
      return nullptr;
    }
  } else if (size < full.size() + 1) {
    errno = size == 0 ? EINVAL : ERANGE;
    return nullptr;
  }
  std::memcpy(buffer, full.c_str(), full.size() + 1);
  return buffer;
}

// Directory streams.
FLOTILLA_EXPORT DIR* opendir(const char* path) {
  std::string fleet;
  if (!fleet_path(AT_FDCWD, path, fleet)) return REAL(opendir)(path);
  auto directory = std::make_unique<FleetDirectory>();
  directory->path = fleet;
  Lock lock(files().mutex());
  const int client_fd = with_client([&](fs::Client&) { return stream_client_fd(*directory); });
  if (client_fd < 0) return nullptr;
  g_directories.insert(directory.get());
  g_open_directories.fetch_add(1, std::memory_order_relaxed);
  return reinterpret_cast<DIR*>(directory.release());
}
FLOTILLA_EXPORT DIR* fdopendir(int fd) {
  if (!is_file(fd)) return REAL(fdopendir)(fd);
  return open_directory_stream(fd);
}
FLOTILLA_EXPORT dirent64* readdir64(DIR* stream) {
  FleetDirectory* directory = fleet_directory(stream);
  if (directory == nullptr) return REAL(readdir64)(stream);
  return next_entry(*directory);
}
FLOTILLA_EXPORT dirent* readdir(DIR* stream) {
  FleetDirectory* directory = fleet_directory(stream);
  if (directory == nullptr) return REAL(readdir)(stream);
  static_assert(sizeof(dirent) == sizeof(dirent64));
  return reinterpret_cast<dirent*>(next_entry(*directory));
}
FLOTILLA_EXPORT int closedir(DIR* stream) {
  FleetDirectory* directory = fleet_directory(stream);
  if (directory == nullptr) return REAL(closedir)(stream);
  {
    Lock lock(files().mutex());
    g_directories.erase(directory);
    g_open_directories.fetch_sub(1, std::memory_order_relaxed);
  }
  int closed = 0;
  if (directory->fd >= 0) {
    closed = close_file(directory->fd);
  } else {
    Lock lock(files().mutex());
    if (directory->client_fd >= 0 && directory->generation == files().generation()) {
      closed = with_client([&](fs::Client& client) { return client.close(directory->client_fd); });
    }
  }
  delete directory;
  return closed;
}
FLOTILLA_EXPORT int dirfd(DIR* stream) {
  FleetDirectory* directory = fleet_directory(stream);
  if (directory == nullptr) return REAL(dirfd)(stream);
  Lock lock(files().mutex());
  if (directory->fd < 0) {  // made now: the program asked for a descriptor
    const int client_fd = with_client([&](fs::Client&) { return stream_client_fd(*directory); });
    if (client_fd < 0) return -1;
    const int fd = files().install(client_fd, directory->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    directory->fd = fd;
    directory->client_fd = -1;  // the descriptor's now
  }
  return directory->fd;
}
FLOTILLA_EXPORT void rewinddir(DIR* stream) {
  FleetDirectory* directory = fleet_directory(stream);
  if (directory == nullptr) return REAL(rewinddir)(stream);
  Lock lock(files().mutex());
  directory->listed = false;
  directory->next = 0;
}
FLOTILLA_EXPORT long telldir(DIR* stream) {
  FleetDirectory* directory = fleet_directory(stream);
  if (directory == nullptr) return REAL(telldir)(stream);
  return static_cast<long>(directory->next);
}
FLOTILLA_EXPORT void seekdir(DIR* stream, long position) {
  FleetDirectory* directory = fleet_directory(stream);
  if (directory == nullptr) return REAL(seekdir)(stream, position);
  Lock lock(files().mutex());
  directory->next = static_cast<std::size_t>(std::max(position, 0L));
}

// getdents64 on a fleet directory: the description's offset counts the entries already given.
FLOTILLA_EXPORT ssize_t getdents64(int fd, void* buffer, size_t length) {
  if (!is_file(fd)) return REAL(getdents64)(fd, buffer, length);
  Lock lock(files().mutex());
  const std::shared_ptr<OpenFile> file = files().at(fd);
  if (file == nullptr) return fail_with(EBADF);
  if (static_cast<fs::FileType>(file->state->type) != fs::FileType::directory) return fail_with(ENOTDIR);
  std::vector<fs::DirEntry>& entries = file->listing;
  if (entries.empty() || file->state->offset.load() == 0) {  // first read, or rewound
    entries = {fs::DirEntry{".", file->state->inode, fs::FileType::directory},
               fs::DirEntry{"..", file->state->inode, fs::FileType::directory}};
    if (with_file(fd, [&](fs::Client& client, int client_fd, OpenFile&) { return client.readdir_fd(client_fd, entries); }) !=
        0) {
      entries.clear();
      return -1;
    }
  }
  OffsetHold hold(*file->state);
  std::size_t next = static_cast<std::size_t>(file->state->offset.load());
  std::size_t used = 0;
  for (; next < entries.size(); ++next) {
    const fs::DirEntry& entry = entries[next];
    const std::size_t record = (offsetof(dirent64, d_name) + entry.name.size() + 1 + 7) & ~std::size_t{7};
    if (used + record > length) break;
    auto* out = reinterpret_cast<dirent64*>(static_cast<char*>(buffer) + used);
    out->d_ino = entry.inode;
    out->d_off = static_cast<off64_t>(next + 1);
    out->d_reclen = static_cast<unsigned short>(record);
    out->d_type = dirent_type(entry.type);
    std::memcpy(out->d_name, entry.name.c_str(), entry.name.size() + 1);
    used += record;
  }
  if (used == 0 && next < entries.size()) return fail_with(EINVAL);  // not even one entry fits
  file->state->offset.store(next);
  return static_cast<ssize_t>(used);
}

// stdio streams.
FLOTILLA_EXPORT FILE* fopen(const char* path, const char* mode) {
  std::string fleet;
  if (!fleet_path(AT_FDCWD, path, fleet)) return REAL(fopen)(path, mode);
  const int flags = open_flags_of(mode);
  if (flags < 0) {
    errno = EINVAL;
    return nullptr;
  }
  const int fd = open_fleet(fleet, flags, 0666);
  if (fd < 0) return nullptr;
  FILE* stream = file_stream(fd, mode);
  if (stream == nullptr) close_file(fd);
  return stream;
}
FLOTILLA_EXPORT FILE* fopen64(const char* path, const char* mode) {
  std::string fleet;
  if (!fleet_path(AT_FDCWD, path, fleet)) return REAL(fopen64)(path, mode);
  return fopen(path, mode);
}
FLOTILLA_EXPORT FILE* fdopen(int fd, const char* mode) {
  if (is_socket(fd)) return socket_stream(fd, mode);
  if (!is_file(fd)) return REAL(fdopen)(fd, mode);
  return file_stream(fd, mode);
}

// Extended attributes: the fleet has none (ls asks for ACLs; ENOTSUP tells it there are none).
FLOTILLA_EXPORT ssize_t getxattr(const char* path, const char* name, void* value, size_t size) {
  std::string fleet;
  if (!fleet_path(AT_FDCWD, path, fleet)) return REAL(getxattr)(path, name, value, size);
  return fail_with(ENOTSUP);
}
FLOTILLA_EXPORT ssize_t lgetxattr(const char* path, const char* name, void* value, size_t size) {
  std::string fleet;
  if (!fleet_path(AT_FDCWD, path, fleet)) return REAL(lgetxattr)(path, name, value, size);
  return fail_with(ENOTSUP);
}
FLOTILLA_EXPORT ssize_t fgetxattr(int fd, const char* name, void* value, size_t size) {
  if (!is_file(fd)) return REAL(fgetxattr)(fd, name, value, size);
  return fail_with(ENOTSUP);
}
FLOTILLA_EXPORT ssize_t listxattr(const char* path, char* list, size_t size) {
  std::string fleet;
  if (!fleet_path(AT_FDCWD, path, fleet)) return REAL(listxattr)(path, list, size);
  return fail_with(ENOTSUP);
}
FLOTILLA_EXPORT ssize_t llistxattr(const char* path, char* list, size_t size) {
  std::string fleet;
  if (!fleet_path(AT_FDCWD, path, fleet)) return REAL(llistxattr)(path, list, size);
  return fail_with(ENOTSUP);
}
FLOTILLA_EXPORT ssize_t flistxattr(int fd, char* list, size_t size) {
  if (!is_file(fd)) return REAL(flistxattr)(fd, list, size);
  return fail_with(ENOTSUP);
}

FLOTILLA_EXPORT int fsetxattr(int fd, const char* name, const void* value, size_t size, int flags) {
  if (!is_file(fd)) return REAL(fsetxattr)(fd, name, value, size, flags);
  return fail_with(ENOTSUP);
}
FLOTILLA_EXPORT int fremovexattr(int fd, const char* name) {
  if (!is_file(fd)) return REAL(fremovexattr)(fd, name);
  return fail_with(ENOTSUP);
}

// flock on a fleet descriptor is granted at once and holds nothing back, like its record locks
// (fcntl_file): every fleet descriptor is a description of the one descriptor table.
FLOTILLA_EXPORT int flock(int fd, int operation) {
  if (!is_file(fd)) return REAL(flock)(fd, operation);
  const int kind = operation & ~LOCK_NB;
  if (kind != LOCK_SH && kind != LOCK_EX && kind != LOCK_UN) return fail_with(EINVAL);
  return 0;
}

// Temporary files in the fleet: the C library's own versions open without passing here.
FLOTILLA_EXPORT int mkostemps(char* pattern, int suffix_length, int flags) {
  std::string fleet;
  if (!fleet_path(AT_FDCWD, pattern, fleet)) return REAL(mkostemps)(pattern, suffix_length, flags);
  const std::size_t length = std::strlen(pattern);
  if (suffix_length < 0 || length < 6 + static_cast<std::size_t>(suffix_length)) return fail_with(EINVAL);
  char* letters = pattern + length - suffix_length - 6;
  if (std::string_view(letters, 6) != "XXXXXX") return fail_with(EINVAL);
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::uint64_t seed = flotilla::monotonic_ns() ^ (static_cast<std::uint64_t>(::getpid()) << 32);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    for (int i = 0; i < 6; ++i) {
      seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
      letters[i] = kAlphabet[(seed >> 33) % (sizeof(kAlphabet) - 1)];
    }
    if (!fleet_path(AT_FDCWD, pattern, fleet)) return fail_with(EINVAL);
    const int fd = open_fleet(fleet, O_RDWR | O_CREAT | O_EXCL | (flags & (O_APPEND | O_CLOEXEC)), 0600);
    if (fd >= 0 || errno != EEXIST) return fd;
  }
  return fail_with(EEXIST);
}
FLOTILLA_EXPORT int mkstemp(char* pattern) { return mkostemps(pattern, 0, 0); }
FLOTILLA_EXPORT int mkstemp64(char* pattern) { return mkostemps(pattern, 0, 0); }
FLOTILLA_EXPORT int mkostemp(char* pattern, int flags) { return mkostemps(pattern, 0, flags); }
FLOTILLA_EXPORT int mkostemp64(char* pattern, int flags) { return mkostemps(pattern, 0, flags); }
FLOTILLA_EXPORT int mkstemps(char* pattern, int suffix_length) { return mkostemps(pattern, suffix_length, 0); }
