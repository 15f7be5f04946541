// flotilla-mount: the file fleet as a FUSE file system, for programs the preload library cannot
// reach (static binaries, a shell's own redirections). `flotilla mount DIR` runs it.
//
// Decision: it leases an application seat, like a program under `flotilla run`, rather than being
// a component the supervisor starts. A mount belongs to whoever asked for it (their directory,
// their lifetime), the supervisor has nothing to restart when it goes, and its end is the seat's
// end: the file servers release its descriptors through the same client-death notice as any
// program's. It runs in the foreground, one request at a time (the client library is not
// thread-safe), and unmounts on SIGINT, SIGTERM and SIGHUP.
#define FUSE_USE_VERSION 31

#include <fuse.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <string>

#include "dataplane/control_address.hpp"
#include "sockets/fs/fleet_connection.hpp"

namespace {

using namespace flotilla;
using namespace flotilla::fs;

constexpr const char* kName = "flotilla-mount";

FleetConnection* g_fleet = nullptr;

Client& client() { return g_fleet->client(); }

// A call that failed because the stack went away ends the mount after it answers.
int answer(int result) {
  if (g_fleet->stack_gone()) {
    if (fuse* self = fuse_get_context()->fuse; self != nullptr) fuse_exit(self);
    return -EIO;
  }
  return result;
}

std::uint64_t time_of(const timespec& time) {
  if (time.tv_nsec == UTIME_OMIT) return kTimeOmit;
  timespec value = time;
  if (time.tv_nsec == UTIME_NOW) ::clock_gettime(CLOCK_REALTIME, &value);
  return static_cast<std::uint64_t>(value.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(value.tv_nsec);
}

int descriptor(const fuse_file_info* fi) { return static_cast<int>(fi->fh); }

void* on_init(fuse_conn_info*, fuse_config* config) {
  config->use_ino = 1;
  config->readdir_ino = 1;
  return nullptr;
}

int on_getattr(const char* path, struct stat* out, fuse_file_info* fi) {
  FileStat st;
  const int result = fi != nullptr ? client().fstat(descriptor(fi), st) : client().lstat(path, st);
  if (result == 0) fill_stat(st, *out);
  return answer(result);
}

int on_readdir(const char* path, void* buffer, fuse_fill_dir_t fill, off_t, fuse_file_info*, fuse_readdir_flags) {
  std::vector<DirEntry> entries;
  const int result = client().readdir(path, entries);
  if (result != 0) return answer(result);
  fill(buffer, ".", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  fill(buffer, "..", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  for (const DirEntry& entry : entries) {
    struct stat st {};
    st.st_ino = entry.inode;
    st.st_mode = entry.type == FileType::directory ? S_IFDIR : entry.type == FileType::symlink ? S_IFLNK : S_IFREG;
    if (fill(buffer, entry.name.c_str(), &st, 0, static_cast<fuse_fill_dir_flags>(0)) != 0) break;
  }
  return answer(0);
}

int on_mkdir(const char* path, mode_t mode) { return answer(client().mkdir(path, mode & 07777)); }
int on_rmdir(const char* path) { return answer(client().rmdir(path)); }
int on_unlink(const char* path) { return answer(client().unlink(path)); }
int on_symlink(const char* target, const char* path) { return answer(client().symlink(target, path)); }

int on_readlink(const char* path, char* out, size_t size) {
  if (size == 0) return -EINVAL;
  std::string target;
  const int result = client().readlink(path, target);
  if (result != 0) return answer(result);
  const std::size_t copied = std::min(target.size(), size - 1);
  std::memcpy(out, target.data(), copied);
  out[copied] = '\0';
  return answer(0);
}

int on_rename(const char* from, const char* to, unsigned int flags) {
  if (flags == RENAME_NOREPLACE) {
    FileStat st;
    const int exists = client().lstat(to, st);
    if (exists == 0) return answer(-EEXIST);
    if (exists != -ENOENT) return answer(exists);
  } else if (flags != 0) {
    return -EINVAL;  // RENAME_EXCHANGE and whiteouts: the fleet has no atomic exchange
  }
  return answer(client().rename(from, to));
}

int on_chmod(const char* path, mode_t mode, fuse_file_info*) { return answer(client().chmod(path, mode & 07777)); }

int on_chown(const char* path, uid_t uid, gid_t gid, fuse_file_info*) {
  if (uid == static_cast<uid_t>(-1) || gid == static_cast<gid_t>(-1)) {
    FileStat st;
    if (const int result = client().lstat(path, st); result != 0) return answer(result);
    if (uid == static_cast<uid_t>(-1)) uid = st.uid;
    if (gid == static_cast<gid_t>(-1)) gid = st.gid;
  }
  return answer(client().chown(path, uid, gid, false));  // the kernel already followed what it should
}

int on_truncate(const char* path, off_t size, fuse_file_info* fi) {
  if (size < 0) return -EINVAL;
  const auto length = static_cast<std::uint64_t>(size);
  return answer(fi != nullptr ? client().ftruncate(descriptor(fi), length) : client().truncate(path, length));
}

int on_utimens(const char* path, const timespec times[2], fuse_file_info*) {
  timespec now[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
  const timespec* given = times != nullptr ? times : now;
  return answer(client().utimens(path, time_of(given[0]), time_of(given[1]), false));
}

int on_open(const char* path, fuse_file_info* fi) {
  const int fd = client().open(path, fi->flags);
  if (fd < 0) return answer(fd);
  fi->fh = static_cast<std::uint64_t>(fd);
  return answer(0);
}

int on_create(const char* path, mode_t mode, fuse_file_info* fi) {
  const int fd = client().open(path, fi->flags | O_CREAT, mode & 07777);
  if (fd < 0) return answer(fd);
  fi->fh = static_cast<std::uint64_t>(fd);
  return answer(0);
}

int on_read(const char*, char* out, size_t size, off_t offset, fuse_file_info* fi) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t got = client().pread(descriptor(fi), std::as_writable_bytes(std::span(out + done, size - done)),
                                       static_cast<std::uint64_t>(offset) + done);
    if (got < 0) return answer(static_cast<int>(got));
    if (got == 0) break;
    done += static_cast<std::size_t>(got);
  }
  return answer(static_cast<int>(done));
}

int on_write(const char*, const char* data, size_t size, off_t offset, fuse_file_info* fi) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t put = client().pwrite(descriptor(fi), std::as_bytes(std::span(data + done, size - done)),
                                        static_cast<std::uint64_t>(offset) + done);
    if (put < 0) return answer(static_cast<int>(put));
    if (put == 0) break;
    done += static_cast<std::size_t>(put);
  }
  return answer(static_cast<int>(done));
}

// close(2) of any copy of the descriptor: what was written is published here, so another
// program that opens the file after this close returns sees it (close-to-open).
int on_flush(const char*, fuse_file_info* fi) { return answer(client().fsync(descriptor(fi))); }
int on_fsync(const char*, int, fuse_file_info* fi) { return answer(client().fsync(descriptor(fi))); }
int on_release(const char*, fuse_file_info* fi) { return answer(client().close(descriptor(fi))); }

fuse_operations operations() {
  fuse_operations ops{};
  ops.init = on_init;
  ops.getattr = on_getattr;
  ops.readdir = on_readdir;
  ops.mkdir = on_mkdir;
  ops.rmdir = on_rmdir;
  ops.unlink = on_unlink;
  ops.symlink = on_symlink;
  ops.readlink = on_readlink;
  ops.rename = on_rename;
  ops.chmod = on_chmod;
  ops.chown = on_chown;
  ops.truncate = on_truncate;
  ops.utimens = on_utimens;
  ops.open = on_open;
  ops.create = on_create;
  ops.read = on_read;
  ops.write = on_write;
  ops.flush = on_flush;
  ops.fsync = on_fsync;
  ops.release = on_release;
  return ops;
}

[[noreturn]] void fail(const std::string& message, int code = 1) {
  std::fprintf(stderr, "%s: %s\n", kName, message.c_str());
  std::exit(code);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"flotilla-mount: the Flotilla file fleet as a FUSE file system at DIR, until SIGINT or SIGTERM "
               "(run by 'flotilla mount DIR')"};
  std::string socket = default_socket_path();
  std::string directory;
  app.add_option("DIR", directory, "An existing empty directory to mount the fleet on")->required();
  app.add_option("--socket", socket, "Supervisor control socket (or $FLOTILLA_SOCKET)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  std::error_code error;
  const auto status = std::filesystem::status(directory, error);
  if (!std::filesystem::exists(status)) fail("'" + directory + "' does not exist", 2);
  if (!std::filesystem::is_directory(status)) fail("'" + directory + "' is not a directory", 2);
  if (::access("/dev/fuse", R_OK | W_OK) != 0) {
    fail(std::string("FUSE is unavailable: /dev/fuse: ") + std::strerror(errno) +
         " (load the fuse module, or give the container the device)");
  }

  auto leased = FleetConnection::lease(socket);
  if (!leased) {
    switch (leased.error().code) {
      case Errc::closed: fail("the stack is not running (no supervisor at " + socket + "); start it with 'flotilla up'");
      case Errc::exhausted: fail("no free application seat: every seat is leased (close a 'flotilla run' program)");
      default: fail("cannot reach the file fleet: " + leased.error().message());
    }
  }
  g_fleet = leased.value().get();

  const std::string name = std::string("fsname=flotilla,subtype=flotilla");
  std::vector<std::string> words{kName, "-o", name};
  if (::geteuid() == 0) words.insert(words.end(), {"-o", "allow_other"});
  std::vector<char*> fuse_argv;
  for (std::string& word : words) fuse_argv.push_back(word.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(fuse_argv.size()), fuse_argv.data());
  const fuse_operations ops = operations();
  fuse* fs = fuse_new(&args, &ops, sizeof(ops), nullptr);
  if (fs == nullptr) fail("FUSE is unavailable: fuse_new failed");
  if (fuse_mount(fs, directory.c_str()) != 0) {
    fuse_destroy(fs);
    fail("FUSE is unavailable: cannot mount on '" + directory + "' (see the line above)");
  }
  fuse_session* session = fuse_get_session(fs);
  // libfuse leaves an ignored signal ignored, and a shell starts a background job with SIGINT
  // ignored: these signals are how a mount is told to end, so they are taken back first.
  for (int signal : {SIGINT, SIGTERM, SIGHUP}) std::signal(signal, SIG_DFL);
  if (fuse_set_signal_handlers(session) != 0) {
    fuse_unmount(fs);
    fuse_destroy(fs);
    fail("cannot install the signal handlers");
  }
  std::fprintf(stderr, "%s: the file fleet (%u servers, seat %.*s) is mounted on %s\n", kName,
               static_cast<unsigned>(g_fleet->servers()), static_cast<int>(g_fleet->seat().size()),
               g_fleet->seat().data(), directory.c_str());
  const int loop = fuse_loop(fs);
  fuse_remove_signal_handlers(session);
  fuse_unmount(fs);
  fuse_destroy(fs);
  fuse_opt_free_args(&args);
  if (g_fleet->stack_gone()) fail("the stack stopped; unmounted " + directory);
  std::fprintf(stderr, "%s: unmounted %s\n", kName, directory.c_str());
  return loop >= 0 ? 0 : 1;  // a positive value: the signal that ended it
}
