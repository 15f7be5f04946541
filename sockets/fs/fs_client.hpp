// The file fleet's client library: POSIX-like calls turned into FsMessages to the file servers.
//
// Every call returns 0 or a count on success and -errno on failure, like the system calls it
// stands for (read and write return the byte count).
//
// - Paths are fleet paths, absolute or relative to the fleet's root; symlinks in them are
//   followed (40 at most, then ELOOP).
// - Lookups are cached per (directory, name). The servers send an invalidation to every client
//   that looked a name up when it is renamed, unlinked or removed; the client drains those before
//   every cached lookup, so it never uses a stale one. A server's restart notice drops everything
//   learned from that server.
// - Attributes are cached per inode the same way: what an FSTAT, a RESOLVE with stat or a listing
//   (a subdirectory's) gave is kept until the inode's home server says it changed, which it does
//   before it answers the change. So a stat after a listing, and a stat or fstat of a file
//   nobody changed since, costs no message.
// - open is one message in the common case: the server holding the entry creates the inode,
//   the entry and the descriptor together. A file renamed to another server is opened at its
//   home after the entry's server names it.
// - Descriptors are hybrid: the offset lives here until share() hands the descriptor to another
//   client (a child); from then reads, writes and seeks go through the server, until a reply says
//   this client is the only holder left.
// - Data moves through the shared buffer cache: the client fetches a file's block list (BLOCKS)
//   and copies to and from the blocks itself. Consistency is close-to-open: a file's size is read
//   at open, and what this client wrote is published (FLUSH) at close and fsync.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "components/formats/fs_block_cache.hpp"
#include "components/formats/fs_messages.hpp"
#include "dataplane/result.hpp"

namespace flotilla::fs {

// How a client reaches the servers. Implementations: the fleet simulator in tests; channels to
// the server processes.
class Transport {
 public:
  virtual ~Transport() = default;
  virtual ClientId client() const = 0;
  virtual std::uint16_t servers() const = 0;
  // Sends `request` and waits for its reply. Across a server restart the same request (same
  // number) is sent again: the server's reply cache answers one the dead incarnation ran.
  virtual Result<FsMessage> call(ServerIndex server, const FsMessage& request) = 0;
  // Sends every request at once (to distinct servers) and replaces each by its reply.
  virtual Status call_each(std::span<const ServerIndex> servers, std::span<FsMessage> messages);
  // Sends `request` and does not wait for its reply, which is taken (and dropped) later; a request
  // whose answer nobody needs (CLOSE). It is still run in order with this client's next requests
  // to that server, and after a restart it is sent again like any unanswered request.
  virtual Status post(ServerIndex server, const FsMessage& request);
  // Appends every invalidation and restart notice that has arrived; never waits.
  virtual void drain(std::vector<FsMessage>& notices) = 0;
};

struct FileStat {
  InodeNumber inode = 0;
  FileType type = FileType::none;
  std::uint64_t size = 0;
  std::uint64_t blocks = 0;
  std::uint32_t mode = 0;
  std::uint32_t nlink = 0;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::uint64_t atime_ns = 0;
  std::uint64_t mtime_ns = 0;
  std::uint64_t ctime_ns = 0;
};

// `in` as struct stat says it (st_dev left 0).
void fill_stat(const FileStat& in, struct stat& out);

struct DirEntry {
  std::string name;
  InodeNumber inode = 0;
  FileType type = FileType::none;
};

// What a parent hands a child for one shared descriptor (fork): the child passes it to inherit().
struct SharedDescriptor {
  InodeNumber inode = 0;
  std::uint64_t server_descriptor = 0;
  std::uint32_t flags = 0;
  FileType type = FileType::none;
};

struct ClientOptions {
  bool root_distributed = true;  // as the servers' ServerConfig
  std::size_t max_descriptors = 1024;
  // The first request number. A process that takes over a client id another process held (an
  // application seat's next lease) starts past the numbers its predecessor used, so an answer
  // still on its way to the predecessor is never taken for one of its own.
  std::uint64_t first_request = 1;
};

class Client {
 public:
  Client(Transport& transport, BlockCache cache, ClientOptions options = {});

  int open(std::string_view path, int flags, std::uint32_t mode = 0644);
  // `directory` is a descriptor of a directory, or AT_FDCWD (the fleet's root).
  int openat(int directory, std::string_view path, int flags, std::uint32_t mode = 0644);
  ssize_t read(int fd, std::span<std::byte> out);
  ssize_t write(int fd, std::span<const std::byte> data);
  ssize_t pread(int fd, std::span<std::byte> out, std::uint64_t offset);
  ssize_t pwrite(int fd, std::span<const std::byte> data, std::uint64_t offset);
  std::int64_t lseek(int fd, std::int64_t offset, int whence);
  int close(int fd);
  int dup(int fd);
  int fsync(int fd);
  int ftruncate(int fd, std::uint64_t size);
  int fstat(int fd, FileStat& out);

  int stat(std::string_view path, FileStat& out);
  int lstat(std::string_view path, FileStat& out);
  // A distributed directory spreads its entries over every server.
  int mkdir(std::string_view path, std::uint32_t mode = 0755, bool distributed = false);
  int rmdir(std::string_view path);
  int unlink(std::string_view path);
  int rename(std::string_view from, std::string_view to);
  // Every entry once, asking all the servers that may hold some at the same time.
  int readdir(std::string_view path, std::vector<DirEntry>& out);
  // The same for the directory descriptor `fd` names (no lookup: the directory it opened).
  int readdir_fd(int fd, std::vector<DirEntry>& out);
  int truncate(std::string_view path, std::uint64_t size);
  int chmod(std::string_view path, std::uint32_t mode);
  // `follow` false: a symlink that `path` ends in is changed itself (lchown, AT_SYMLINK_NOFOLLOW).
  int chown(std::string_view path, std::uint32_t uid, std::uint32_t gid, bool follow = true);
  int utimens(std::string_view path, std::uint64_t atime_ns, std::uint64_t mtime_ns, bool follow = true);
  // The same for the file descriptor `fd` names, wherever it is now (renamed, unlinked): its
  // inode, with no lookup.
  int fchmod(int fd, std::uint32_t mode);
  int fchown(int fd, std::uint32_t uid, std::uint32_t gid);
  int futimens(int fd, std::uint64_t atime_ns, std::uint64_t mtime_ns);
  int symlink(std::string_view target, std::string_view path);
  int readlink(std::string_view path, std::string& out);

  // fork: the descriptor becomes shared with `child`, its offset moves to the server.
  int share(int fd, ClientId child, SharedDescriptor& out);
  // The child's side: a descriptor for what the parent shared.
  int inherit(const SharedDescriptor& shared);
  // A descriptor of its own for an inode another process opened (a descriptor inherited over
  // fork or exec): O_CREAT, O_EXCL and O_TRUNC are ignored, they were applied by the first open.
  int open_inode(InodeNumber inode, int flags);
  // What descriptor `fd` names (its inode, type and open flags).
  int describe_fd(int fd, SharedDescriptor& out) const;
  // Takes the file's size from the server again: another process may have written to it
  // (`at_least`: what another process sharing the description wrote and has not published yet).
  int refresh(int fd, std::uint64_t at_least = 0);

  std::uint64_t cached_lookups() const { return cache_hits_; }
  std::uint64_t cached_attributes() const { return attribute_hits_; }
  std::size_t open_descriptors() const;

 private:
  struct DirRef {
    InodeNumber inode = kRootInode;
    bool distributed = false;
  };
  struct Found {
    InodeNumber inode = 0;
    std::uint64_t type = 0;  // type word
  };
  struct Description {
    InodeNumber inode = 0;
    std::uint64_t server_descriptor = 0;
    std::uint32_t flags = 0;
    FileType type = FileType::none;
    bool distributed = false;
    bool shared = false;          // the offset lives at the server
    std::uint64_t offset = 0;     // while not shared
    std::uint64_t size = 0;       // as of open, and what this client did since
    std::uint64_t written_end = 0;
    bool dirty = false;
    std::vector<BlockId> blocks;  // the prefix of the file's block list fetched so far
  };
  struct CachedLookup {
    Found found;
    ServerIndex server = 0;
  };

  FsMessage request(FsOp op, InodeNumber inode);
  Result<FsMessage> call(ServerIndex server, FsMessage& message);
  int call_status(ServerIndex server, FsMessage& message, FsMessage* reply = nullptr);
  void drain_notices();
  // `stat`, when given, receives the inode's attributes if the entry's server holds the inode
  // (stat->inode == out.inode then; 0 otherwise).
  int lookup(const DirRef& directory, std::string_view name, Found& out, FileStat* stat = nullptr);
  int readlink_inode(InodeNumber inode, std::string& out);
  // Resolves `path`'s directory part, relative paths from `start` (the root when null); `name` is
  // the last component ("" when the path names a directory itself, like "/").
  // `chain`, when given, receives the directories from the root down to `parent`.
  int walk(std::string_view path, const DirRef* start, DirRef& parent, std::string& name,
           std::string* parent_path, std::vector<InodeNumber>* chain = nullptr);
  int resolve(std::string_view path, bool follow_last, Found& out, FileStat* stat = nullptr);
  int stat_path(std::string_view path, bool follow_last, FileStat& out);
  int list(const DirRef& directory, std::vector<DirEntry>& out);
  // `first_blocks`: the block ids (u32) an OPEN's reply carried.
  int describe(const Found& found, int flags, std::uint64_t descriptor, std::uint64_t size,
               std::span<const char> first_blocks = {});
  Description* description(int fd);
  int flush(Description& d);
  int fetch_blocks(Description& d, std::uint64_t end, bool grow);
  int copy(Description& d, std::uint64_t offset, std::span<std::byte> out,
           std::span<const std::byte> in);
  int stat_inode(InodeNumber inode, FileStat& out);
  // `change(inode)` for the inode `path` names, or descriptor `fd` (-EBADF when none).
  template <class Change>
  int on_path(std::string_view path, bool follow, Change change);
  template <class Change>
  int on_fd(int fd, Change change);
  int chmod_inode(InodeNumber inode, std::uint32_t mode);
  int chown_inode(InodeNumber inode, std::uint32_t uid, std::uint32_t gid);
  int utimens_inode(InodeNumber inode, std::uint64_t atime_ns, std::uint64_t mtime_ns);
  // The kept attributes of `inode`, after draining invalidations; false when none are kept.
  bool cached_stat(InodeNumber inode, FileStat& out);
  // Keeps what the inode's home server gave (it counts this client among the holders now).
  void keep_attributes(const FileStat& stat);
  // Publishes (FLUSH) what this client's descriptors of `inode` wrote and have not published.
  int publish_writes(InodeNumber inode);
  int release(std::shared_ptr<Description>& d);
  // A rename's last step: the file its new name replaced loses that link at its home, unless the
  // ADD_MAP's server was that home and dropped it already.
  int destroy_replaced(const FsMessage& added);

  Transport* transport_;
  BlockCache cache_;
  ClientOptions options_;
  std::uint64_t next_request_ = 1;
  // How far the last file opened for writing here grew; a first file is taken for a small one.
  std::uint64_t expected_write_bytes_ = kBlockBytes;
  std::vector<std::shared_ptr<Description>> fds_;
  std::map<std::pair<InodeNumber, std::string>, CachedLookup> lookups_;
  std::map<InodeNumber, FileStat> attributes_;  // from each inode's home server
  std::vector<FsMessage> notices_;
  std::uint64_t cache_hits_ = 0;
  std::uint64_t attribute_hits_ = 0;
};

}  // namespace flotilla::fs
