#include "sockets/fs/fs_client.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>


namespace flotilla::fs {
namespace {

constexpr std::size_t kMaxPathBytes = 4096;
constexpr int kMaxSymlinks = 40;
// The most a growing file asks for beyond what a write needs, and the least its first growth
// asks for (see fetch_blocks).
constexpr std::uint64_t kGrowAheadBytes = 1 << 20;
constexpr std::uint64_t kFirstGrowthBytes = 64 << 10;
// A description with no descriptor at a server (a directory opened by name); servers number
// theirs from 1.
constexpr std::uint64_t kNoServerDescriptor = 0;
constexpr std::size_t kMaxKeptAttributes = 1 << 16;

bool writes(std::uint32_t flags) { return (flags & O_ACCMODE) != O_RDONLY; }
bool reads(std::uint32_t flags) { return (flags & O_ACCMODE) != O_WRONLY; }
std::uint64_t blocks_for(std::uint64_t bytes) { return (bytes + kBlockBytes - 1) / kBlockBytes; }

std::vector<std::string> split(std::string_view path) {
  std::vector<std::string> parts;
  std::size_t at = 0;
  while (at < path.size()) {
    const std::size_t slash = path.find('/', at);
    const std::size_t end = slash == std::string_view::npos ? path.size() : slash;
    if (end > at && path.substr(at, end - at) != ".") parts.emplace_back(path.substr(at, end - at));
    at = end + 1;
  }
  return parts;
}

// The path of `path`'s directory part, for resolving a relative symlink target found in it.
std::string directory_part(std::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  const std::size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return "/";
  return std::string(path.substr(0, slash + 1));
}

FileType type_of_mode(std::uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFDIR: return FileType::directory;
    case S_IFLNK: return FileType::symlink;
    default: return FileType::regular;
  }
}

void fill_file_stat(const StatRecord& in, FileStat& out) {
  out.inode = in.inode;
  out.size = in.size;
  out.blocks = in.blocks;
  out.mode = in.mode;
  out.type = type_of_mode(in.mode);
  out.nlink = in.nlink;
  out.uid = in.uid;
  out.gid = in.gid;
  out.atime_ns = in.atime_ns;
  out.mtime_ns = in.mtime_ns;
  out.ctime_ns = in.ctime_ns;
}

}  // namespace

void fill_stat(const FileStat& in, struct stat& out) {
  auto time_of = [](std::uint64_t ns) {
    return timespec{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  };
  out = {};
  out.st_ino = in.inode;
  out.st_mode = in.mode;
  out.st_nlink = in.nlink;
  out.st_uid = in.uid;
  out.st_gid = in.gid;
  out.st_size = static_cast<off_t>(in.size);
  out.st_blocks = static_cast<blkcnt_t>(in.blocks);
  out.st_blksize = static_cast<blksize_t>(kBlockBytes);
  out.st_atim = time_of(in.atime_ns);
  out.st_mtim = time_of(in.mtime_ns);
  out.st_ctim = time_of(in.ctime_ns);
}

Status Transport::call_each(std::span<const ServerIndex> servers, std::span<FsMessage> messages) {
  for (std::size_t i = 0; i < messages.size(); ++i) {
    auto reply = call(servers[i], messages[i]);
    if (!reply) return reply.error();
    messages[i] = *reply;
  }
  return {};
}

Status Transport::post(ServerIndex server, const FsMessage& request) {
  auto reply = call(server, request);
  if (!reply) return reply.error();
  return {};
}

Client::Client(Transport& transport, BlockCache cache, ClientOptions options)
    : transport_(&transport), cache_(cache), options_(options), next_request_(options.first_request) {}

FsMessage Client::request(FsOp op, InodeNumber inode) {
  FsMessage message;
  message.op = op;
  message.inode = inode;
  return message;
}

Result<FsMessage> Client::call(ServerIndex server, FsMessage& message) {
  message.client = transport_->client();
  message.request = next_request_++;
  return transport_->call(server, message);
}

int Client::call_status(ServerIndex server, FsMessage& message, FsMessage* reply) {
  auto answer = call(server, message);
  if (!answer) return -EIO;
  if (reply != nullptr) *reply = *answer;
  return answer->status;
}

void Client::drain_notices() {
  notices_.clear();
  transport_->drain(notices_);
  for (const FsMessage& notice : notices_) {
    if (notice.op != FsOp::invalidate) continue;
    if ((notice.flags & kAll) != 0) {
      std::erase_if(lookups_, [&](const auto& entry) { return entry.second.server == notice.arg0; });
      std::erase_if(attributes_, [&](const auto& entry) { return home_of(entry.first) == notice.arg0; });
    } else if ((notice.flags & kAttributes) != 0) {
      attributes_.erase(notice.inode);
    } else {
      lookups_.erase({notice.inode, std::string(notice.name())});
    }
  }
}

int Client::lookup(const DirRef& directory, std::string_view name, Found& out, FileStat* stat) {
  if (stat != nullptr) stat->inode = 0;
  drain_notices();
  auto key = std::make_pair(directory.inode, std::string(name));
  if (auto cached = lookups_.find(key); cached != lookups_.end()) {
    ++cache_hits_;
    out = cached->second.found;
    if (stat != nullptr) (void)cached_stat(out.inode, *stat);
    return 0;
  }
  const ServerIndex server =
      entry_server(directory.inode, directory.distributed, name, transport_->servers());
  FsMessage message = request(FsOp::resolve, directory.inode);
  message.set_name(name);
  if (directory.distributed) message.flags |= kDistributed;
  if (stat != nullptr) message.arg0 = kResolveWithStat;
  FsMessage reply;
  if (int error = call_status(server, message, &reply); error != 0) return error;
  out = Found{reply.inode, reply.arg1};
  if (stat != nullptr && reply.payload_length != 0) {
    auto record = stat_of(reply);
    if (record && record->inode == out.inode) {
      fill_file_stat(*record, *stat);
      keep_attributes(*stat);
    }
  }
  lookups_[std::move(key)] = CachedLookup{out, server};
  return 0;
}

int Client::readlink_inode(InodeNumber inode, std::string& out) {
  FsMessage message = request(FsOp::readlink, inode);
  FsMessage reply;
  if (int error = call_status(home_of(inode), message, &reply); error != 0) return error;
  out.assign(reply.extra().data(), reply.extra().size());
  return 0;
}

int Client::walk(std::string_view path, const DirRef* start, DirRef& parent, std::string& name,
                 std::string* parent_path, std::vector<InodeNumber>* chain) {
  if (path.empty()) return -ENOENT;
  if (path.size() > kMaxPathBytes) return -ENAMETOOLONG;
  if (parent_path != nullptr) {
    *parent_path = directory_part(path);
    if (path.find('/') == std::string_view::npos) parent_path->clear();  // relative, one component
  }
  const DirRef root{kRootInode, options_.root_distributed && transport_->servers() > 1};
  DirRef current = start != nullptr && path.front() != '/' ? *start : root;
  name.clear();
  std::vector<DirRef> stack;
  std::deque<std::string> pending;
  for (auto& part : split(path)) pending.push_back(std::move(part));
  int links = 0;
  while (!pending.empty()) {
    std::string component = std::move(pending.front());
    pending.pop_front();
    if (component == "..") {
      if (!stack.empty()) {
        current = stack.back();
        stack.pop_back();
      }
      continue;
    }
    if (component.size() > kMaxNameBytes) return -ENAMETOOLONG;
    if (pending.empty()) {
      parent = current;
      name = std::move(component);
      break;
    }
    Found found;
    if (int error = lookup(current, component, found); error != 0) return error;
    const FileType type = type_of_word(found.type);
    if (type == FileType::symlink) {
      if (++links > kMaxSymlinks) return -ELOOP;
      std::string target;
      if (int error = readlink_inode(found.inode, target); error != 0) return error;
      auto parts = split(target);
      pending.insert(pending.begin(), parts.begin(), parts.end());
      if (!target.empty() && target.front() == '/') {
        current = root;
        stack.clear();
      }
      continue;
    }
    if (type != FileType::directory) return -ENOTDIR;
    stack.push_back(current);
    current = DirRef{found.inode, distributed_of_word(found.type)};
  }
  if (pending.empty() && name.empty()) parent = current;
  if (chain != nullptr) {
    chain->clear();
    for (const DirRef& directory : stack) chain->push_back(directory.inode);
    chain->push_back(parent.inode);
  }
  return 0;
}

int Client::resolve(std::string_view path, bool follow_last, Found& out, FileStat* stat) {
  if (stat != nullptr) stat->inode = 0;
  std::string current(path);
  for (int links = 0; links <= kMaxSymlinks; ++links) {
    DirRef parent;
    std::string name;
    std::string parent_path;
    if (int error = walk(current, nullptr, parent, name, &parent_path); error != 0) return error;
    if (name.empty()) {
      out = Found{parent.inode, type_word(FileType::directory, parent.distributed)};
      return 0;
    }
    if (int error = lookup(parent, name, out, stat); error != 0) return error;
    if (!follow_last || type_of_word(out.type) != FileType::symlink) return 0;
    std::string target;
    if (int error = readlink_inode(out.inode, target); error != 0) return error;
    current = !target.empty() && target.front() == '/' ? target : parent_path + target;
  }
  return -ELOOP;
}

std::size_t Client::open_descriptors() const {
  return static_cast<std::size_t>(
      std::count_if(fds_.begin(), fds_.end(), [](const auto& d) { return d != nullptr; }));
}

Client::Description* Client::description(int fd) {
  if (fd < 0 || static_cast<std::size_t>(fd) >= fds_.size()) return nullptr;
  return fds_[static_cast<std::size_t>(fd)].get();
}

int Client::describe(const Found& found, int flags, std::uint64_t descriptor, std::uint64_t size,
                     std::span<const char> first_blocks) {
  auto d = std::make_shared<Description>();
  for (std::size_t at = 0; at + sizeof(BlockId) <= first_blocks.size(); at += sizeof(BlockId)) {
    BlockId id;
    std::memcpy(&id, first_blocks.data() + at, sizeof(id));
    if (cache_.block(id).empty()) return -EIO;
    d->blocks.push_back(id);
  }
  d->inode = found.inode;
  d->server_descriptor = descriptor;
  d->flags = static_cast<std::uint32_t>(flags);
  d->type = type_of_word(found.type);
  d->distributed = distributed_of_word(found.type);
  d->size = size;
  for (std::size_t fd = 0; fd < fds_.size(); ++fd) {
    if (fds_[fd] == nullptr) {
      fds_[fd] = std::move(d);
      return static_cast<int>(fd);
    }
  }
  fds_.push_back(std::move(d));
  return static_cast<int>(fds_.size() - 1);
}

int Client::open(std::string_view path, int flags, std::uint32_t mode) {
  return openat(AT_FDCWD, path, flags, mode);
}

int Client::openat(int directory, std::string_view path, int flags, std::uint32_t mode) {
  if (open_descriptors() >= options_.max_descriptors) return -EMFILE;
  std::string current(path);
  DirRef start{kRootInode, options_.root_distributed && transport_->servers() > 1};
  if (directory != AT_FDCWD) {
    const Description* d = description(directory);
    if (d == nullptr) return -EBADF;
    if (d->type != FileType::directory) return -ENOTDIR;
    start = DirRef{d->inode, d->distributed};
  }
  for (int links = 0; links <= kMaxSymlinks; ++links) {
    DirRef parent;
    std::string name;
    std::string parent_path;
    if (int error = walk(current, &start, parent, name, &parent_path); error != 0) return error;
    FsMessage reply;
    if (name.empty()) {  // the directory itself
      if (writes(static_cast<std::uint32_t>(flags))) return -EISDIR;
      FsMessage by_inode = request(FsOp::open, parent.inode);
      by_inode.flags = kByInode;
      by_inode.arg0 = static_cast<std::uint32_t>(flags) & ~static_cast<std::uint32_t>(O_CREAT | O_EXCL);
      if (int error = call_status(home_of(parent.inode), by_inode, &reply); error != 0) return error;
      return describe(Found{reply.inode, reply.arg2}, flags, reply.arg0, reply.arg1);
    }
    if ((flags & O_DIRECTORY) != 0 && !writes(static_cast<std::uint32_t>(flags))) {
      // A directory needs no descriptor at a server (it has no offset or data there): what the
      // lookup found, often kept already, is the whole open.
      Found found;
      if (int error = lookup(parent, name, found); error != 0) return error;
      const FileType type = type_of_word(found.type);
      if (type == FileType::directory) return describe(found, flags, kNoServerDescriptor, 0);
      if (type != FileType::symlink) return -ENOTDIR;
    }
    FsMessage message = request(FsOp::open, parent.inode);
    message.set_name(name);
    if (parent.distributed) message.flags |= kDistributed;
    message.arg0 = static_cast<std::uint32_t>(flags);
    message.arg1 = mode;
    message.arg2 = expected_write_bytes_;
    const ServerIndex server =
        entry_server(parent.inode, parent.distributed, name, transport_->servers());
    int error = call_status(server, message, &reply);
    const bool remote_symlink = error == 0 && (reply.flags & kByInode) != 0 &&
                                type_of_word(reply.arg2) == FileType::symlink;
    if (error == -ELOOP || remote_symlink) {
      if ((flags & O_NOFOLLOW) != 0) return -ELOOP;
      Found link;
      if (int e = lookup(parent, name, link); e != 0) return e;
      std::string target;
      if (int e = readlink_inode(link.inode, target); e != 0) return e;
      current = !target.empty() && target.front() == '/' ? target : parent_path + target;
      continue;
    }
    if (error != 0) return error;
    // The entry's server counts this client among the name's lookers now (an open by name).
    lookups_[{parent.inode, name}] = CachedLookup{Found{reply.inode, reply.arg2}, server};
    if ((reply.flags & kByInode) != 0) {
      FsMessage by_inode = request(FsOp::open, reply.inode);
      by_inode.flags = kByInode;
      by_inode.arg0 = static_cast<std::uint32_t>(flags) & ~static_cast<std::uint32_t>(O_CREAT | O_EXCL);
      by_inode.arg2 = expected_write_bytes_;
      FsMessage opened;
      error = call_status(home_of(reply.inode), by_inode, &opened);
      if (error == -ENOENT) continue;  // the entry changed between the two steps: look again
      if (error != 0) return error;
      reply = opened;
    }
    return describe(Found{reply.inode, reply.arg2}, flags, reply.arg0, reply.arg1, reply.extra());
  }
  return -ELOOP;
}

int Client::fetch_blocks(Description& d, std::uint64_t end, bool grow) {
  const std::uint64_t need = blocks_for(end);
  // A file that grows asks for three times as many blocks again as it holds, or as the write
  // needs, and at least kFirstGrowthBytes (up to kGrowAheadBytes more than it needs): written in
  // small pieces, it costs a message per quadrupling, not one per block (10 writes of 4 KiB: one).
  // The server gives back what is past the end when its last descriptor closes.
  std::uint64_t grow_to = 0;
  if (grow) {
    const std::uint64_t held = std::max<std::uint64_t>(d.blocks.size() * kBlockBytes, end);
    grow_to = std::max(end, std::min<std::uint64_t>(std::max(4 * held, kFirstGrowthBytes), end + kGrowAheadBytes));
  }
  while (d.blocks.size() < need) {
    FsMessage message = request(FsOp::blocks, d.inode);
    message.arg0 = d.blocks.size();
    message.arg1 = grow_to;
    FsMessage reply;
    int error = call_status(home_of(d.inode), message, &reply);
    if (error == -ENOSPC && grow_to > end) {  // room for what is needed, not for the extra
      grow_to = end;
      continue;
    }
    grow_to = 0;
    if (error != 0) return error;
    const auto extra = reply.extra();
    const std::size_t count = extra.size() / sizeof(BlockId);
    if (count == 0) break;  // the file has fewer blocks: reads past them see zeros
    for (std::size_t i = 0; i < count; ++i) {
      BlockId id;
      std::memcpy(&id, extra.data() + i * sizeof(BlockId), sizeof(id));
      if (cache_.block(id).empty()) return -EIO;
      d.blocks.push_back(id);
    }
  }
  return 0;
}

int Client::copy(Description& d, std::uint64_t offset, std::span<std::byte> out,
                 std::span<const std::byte> in) {
  const bool writing = !in.empty();
  const std::size_t length = writing ? in.size() : out.size();
  std::size_t done = 0;
  while (done < length) {
    const std::uint64_t at = offset + done;
    const std::uint64_t index = at / kBlockBytes;
    const std::size_t within = at % kBlockBytes;
    const std::size_t step = std::min(length - done, kBlockBytes - within);
    if (index < d.blocks.size()) {
      std::byte* block = cache_.block(d.blocks[index]).data();
      if (writing) {
        std::memcpy(block + within, in.data() + done, step);
      } else {
        std::memcpy(out.data() + done, block + within, step);
      }
    } else if (writing) {
      return -EIO;
    } else {
      std::memset(out.data() + done, 0, step);
    }
    done += step;
  }
  return 0;
}

ssize_t Client::pread(int fd, std::span<std::byte> out, std::uint64_t offset) {
  Description* d = description(fd);
  if (d == nullptr || !reads(d->flags)) return -EBADF;
  if (d->type == FileType::directory) return -EISDIR;
  if (d->shared) {
    // Other holders write too: take the size, and the blocks, from the server.
    FileStat stat;
    if (int error = stat_inode(d->inode, stat); error != 0) return error;
    d->size = stat.size;
    d->blocks.clear();
  }
  const std::uint64_t size = std::max(d->size, d->written_end);
  if (offset >= size || out.empty()) return 0;
  const std::size_t length = static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), size - offset));
  if (int error = fetch_blocks(*d, offset + length, false); error != 0) return error;
  if (int error = copy(*d, offset, out.first(length), {}); error != 0) return error;
  return static_cast<ssize_t>(length);
}

ssize_t Client::pwrite(int fd, std::span<const std::byte> data, std::uint64_t offset) {
  Description* d = description(fd);
  if (d == nullptr || !writes(d->flags)) return -EBADF;
  if (data.empty()) return 0;
  const std::uint64_t end = offset + data.size();
  if (int error = fetch_blocks(*d, end, true); error != 0) return error;
  if (int error = copy(*d, offset, {}, data); error != 0) return error;
  d->written_end = std::max(d->written_end, end);
  d->dirty = true;
  return static_cast<ssize_t>(data.size());
}

ssize_t Client::read(int fd, std::span<std::byte> out) {
  Description* d = description(fd);
  if (d == nullptr || !reads(d->flags)) return -EBADF;
  if (d->type == FileType::directory) return -EISDIR;
  if (!d->shared) {
    const ssize_t n = pread(fd, out, d->offset);
    if (n > 0) d->offset += static_cast<std::uint64_t>(n);
    return n;
  }
  FsMessage message = request(FsOp::read, d->inode);
  message.arg0 = d->server_descriptor;
  message.arg1 = out.size();
  FsMessage reply;
  if (int error = call_status(home_of(d->inode), message, &reply); error != 0) return error;
  const std::uint64_t offset = reply.arg0;
  const std::size_t length = static_cast<std::size_t>(std::min<std::uint64_t>(reply.arg1, out.size()));
  d->size = reply.arg2;
  d->blocks.clear();  // another holder may have truncated the file since
  if (length > 0) {
    if (int error = fetch_blocks(*d, offset + length, false); error != 0) return error;
    if (int error = copy(*d, offset, out.first(length), {}); error != 0) return error;
  }
  if ((reply.flags & kSoleHolder) != 0) {
    d->shared = false;
    d->offset = offset + length;
  }
  return static_cast<ssize_t>(length);
}

ssize_t Client::write(int fd, std::span<const std::byte> data) {
  Description* d = description(fd);
  if (d == nullptr || !writes(d->flags)) return -EBADF;
  if (!d->shared && (d->flags & O_APPEND) == 0) {
    const ssize_t n = pwrite(fd, data, d->offset);
    if (n > 0) d->offset += static_cast<std::uint64_t>(n);
    return n;
  }
  // The server picks the offset: the descriptor is shared, or every write goes to the end.
  if (int error = flush(*d); error != 0) return error;
  FsMessage message = request(FsOp::write, d->inode);
  message.arg0 = d->server_descriptor;
  message.arg1 = data.size();
  FsMessage reply;
  if (int error = call_status(home_of(d->inode), message, &reply); error != 0) return error;
  const std::uint64_t offset = reply.arg0;
  d->size = reply.arg2;
  if (d->shared) d->blocks.clear();  // another holder may have truncated the file since
  if (int error = fetch_blocks(*d, offset + data.size(), false); error != 0) return error;
  if (int error = copy(*d, offset, {}, data); error != 0) return error;
  if (!d->shared || (reply.flags & kSoleHolder) != 0) {
    d->shared = false;
    d->offset = offset + data.size();
  }
  return static_cast<ssize_t>(data.size());
}

std::int64_t Client::lseek(int fd, std::int64_t offset, int whence) {
  Description* d = description(fd);
  if (d == nullptr) return -EBADF;
  if (d->shared) {
    FsMessage message = request(FsOp::lseek, d->inode);
    message.arg0 = d->server_descriptor;
    message.arg1 = static_cast<std::uint64_t>(offset);
    message.arg2 = static_cast<std::uint64_t>(whence);
    FsMessage reply;
    if (int error = call_status(home_of(d->inode), message, &reply); error != 0) return error;
    if ((reply.flags & kSoleHolder) != 0) {
      d->shared = false;
      d->offset = reply.arg0;
    }
    return static_cast<std::int64_t>(reply.arg0);
  }
  std::int64_t base = 0;
  if (whence == SEEK_CUR) {
    base = static_cast<std::int64_t>(d->offset);
  } else if (whence == SEEK_END) {
    FileStat stat;
    if (int error = fstat(fd, stat); error != 0) return error;
    base = static_cast<std::int64_t>(stat.size);
  } else if (whence != SEEK_SET) {
    return -EINVAL;
  }
  if (base + offset < 0) return -EINVAL;
  d->offset = static_cast<std::uint64_t>(base + offset);
  return static_cast<std::int64_t>(d->offset);
}

int Client::flush(Description& d) {
  if (!d.dirty) return 0;
  FsMessage message = request(FsOp::flush, d.inode);
  message.arg0 = d.written_end;
  if (int error = call_status(home_of(d.inode), message); error != 0) return error;
  d.size = std::max(d.size, d.written_end);
  d.dirty = false;
  return 0;
}

int Client::release(std::shared_ptr<Description>& d) {
  // The next file opened for writing is expected to grow as far as this one did (its OPEN then
  // brings the blocks, none after a file left empty): programs write many files alike.
  if (writes(d->flags) && d->type == FileType::regular) expected_write_bytes_ = d->written_end;
  if (d->server_descriptor == kNoServerDescriptor) {
    const int flushed = flush(*d);
    d.reset();
    return flushed;
  }
  FsMessage message = request(FsOp::close, d->inode);
  message.arg0 = d->server_descriptor;
  if (d->dirty) {
    // What this descriptor wrote is published by the close itself (close-to-open), which is then
    // waited for: one message where a FLUSH and a CLOSE were two.
    message.flags = kPublish;
    message.arg2 = d->written_end;
    const int closed = call_status(home_of(d->inode), message);
    d.reset();
    return closed;
  }
  // Nothing waits for the close of a descriptor with nothing to publish: this client's next
  // request to that server is run after it.
  message.client = transport_->client();
  message.request = next_request_++;
  const bool posted = transport_->post(home_of(d->inode), message).ok();
  d.reset();
  return posted ? 0 : -EIO;
}

int Client::close(int fd) {
  if (description(fd) == nullptr) return -EBADF;
  std::shared_ptr<Description> d = std::move(fds_[static_cast<std::size_t>(fd)]);
  if (d.use_count() > 1) return 0;  // another descriptor of this client still holds it
  return release(d);
}

int Client::dup(int fd) {
  if (description(fd) == nullptr) return -EBADF;
  if (open_descriptors() >= options_.max_descriptors) return -EMFILE;
  std::shared_ptr<Description> d = fds_[static_cast<std::size_t>(fd)];
  for (std::size_t slot = 0; slot < fds_.size(); ++slot) {
    if (fds_[slot] == nullptr) {
      fds_[slot] = std::move(d);
      return static_cast<int>(slot);
    }
  }
  fds_.push_back(std::move(d));
  return static_cast<int>(fds_.size() - 1);
}

int Client::fsync(int fd) {
  Description* d = description(fd);
  if (d == nullptr) return -EBADF;
  return flush(*d);
}

int Client::ftruncate(int fd, std::uint64_t size) {
  Description* d = description(fd);
  if (d == nullptr || !writes(d->flags)) return d == nullptr ? -EBADF : -EINVAL;
  if (d->type != FileType::regular) return -EINVAL;
  if (int error = flush(*d); error != 0) return error;
  FsMessage message = request(FsOp::trunc, d->inode);
  message.arg0 = size;
  if (int error = call_status(home_of(d->inode), message); error != 0) return error;
  d->size = size;
  d->written_end = 0;
  if (d->blocks.size() > blocks_for(size)) d->blocks.resize(blocks_for(size));
  return 0;
}

int Client::publish_writes(InodeNumber inode) {
  for (const auto& d : fds_) {
    if (d == nullptr || d->inode != inode || !d->dirty) continue;
    if (int error = flush(*d); error != 0) return error;
  }
  return 0;
}

void Client::keep_attributes(const FileStat& stat) {
  // Forgetting is always safe (the server's later invalidations find nothing), so a walk over a
  // huge tree keeps the memory bounded by starting over.
  if (attributes_.size() >= kMaxKeptAttributes) attributes_.clear();
  attributes_[stat.inode] = stat;
}

bool Client::cached_stat(InodeNumber inode, FileStat& out) {
  drain_notices();
  auto kept = attributes_.find(inode);
  if (kept == attributes_.end()) return false;
  ++attribute_hits_;
  out = kept->second;
  return true;
}

int Client::stat_inode(InodeNumber inode, FileStat& out) {
  // What this client wrote and has not published yet is part of what it sees.
  if (int error = publish_writes(inode); error != 0) return error;
  if (cached_stat(inode, out)) return 0;
  FsMessage message = request(FsOp::fstat, inode);
  FsMessage reply;
  if (int error = call_status(home_of(inode), message, &reply); error != 0) return error;
  auto stat = stat_of(reply);
  if (!stat || stat->inode != inode) return -EIO;
  fill_file_stat(*stat, out);
  keep_attributes(out);
  return 0;
}

int Client::fstat(int fd, FileStat& out) {
  Description* d = description(fd);
  if (d == nullptr) return -EBADF;
  if (int error = flush(*d); error != 0) return error;
  return stat_inode(d->inode, out);
}

int Client::stat_path(std::string_view path, bool follow_last, FileStat& out) {
  Found found;
  if (int error = resolve(path, follow_last, found, &out); error != 0) return error;
  const bool unpublished = std::any_of(fds_.begin(), fds_.end(), [&](const auto& d) {
    return d != nullptr && d->inode == found.inode && d->dirty;
  });
  // The attributes that came with the lookup do for a file this client has no writes to publish.
  if (out.inode == found.inode && !unpublished) return 0;
  return stat_inode(found.inode, out);
}

int Client::stat(std::string_view path, FileStat& out) { return stat_path(path, true, out); }

int Client::lstat(std::string_view path, FileStat& out) { return stat_path(path, false, out); }

int Client::mkdir(std::string_view path, std::uint32_t mode, bool distributed) {
  DirRef parent;
  std::string name;
  if (int error = walk(path, nullptr, parent, name, nullptr); error != 0) return error;
  if (name.empty()) return -EEXIST;
  FsMessage message = request(FsOp::mkdir, parent.inode);
  message.set_name(name);
  if (parent.distributed) message.flags |= kDistributed;
  message.arg0 = mode;
  message.arg1 = distributed ? 1 : 0;
  const ServerIndex server = entry_server(parent.inode, parent.distributed, name, transport_->servers());
  FsMessage reply;
  if (int error = call_status(server, message, &reply); error != 0) return error;
  // The server counts this client among the new name's lookers.
  lookups_[{parent.inode, name}] = CachedLookup{Found{reply.inode, reply.arg1}, server};
  return 0;
}

int Client::rmdir(std::string_view path) {
  DirRef parent;
  std::string name;
  if (int error = walk(path, nullptr, parent, name, nullptr); error != 0) return error;
  if (name.empty()) return -EBUSY;
  Found found;
  if (int error = lookup(parent, name, found); error != 0) return error;
  if (type_of_word(found.type) != FileType::directory) return -ENOTDIR;
  const InodeNumber directory = found.inode;
  const ServerIndex home = home_of(directory);
  auto forget = [&] { lookups_.erase({parent.inode, name}); };

  // 1. The home server serialises rmdirs of this directory.
  std::vector<ServerIndex> servers;
  if (distributed_of_word(found.type)) {
    for (ServerIndex s = 0; s < transport_->servers(); ++s) servers.push_back(s);
  } else {
    servers.push_back(home);
  }
  // Only the home holds entries: it locks, marks and commits in the same message, and a refusal
  // leaves no lock.
  const bool home_only = servers.size() == 1;
  const ServerIndex entry_home = entry_server(parent.inode, parent.distributed, name, transport_->servers());
  FsMessage lock = request(FsOp::rmdir_lock, directory);
  if (home_only) {
    lock.arg0 = kRemoveAtHome;
    // The directory's entry lives at its home too (mkdir puts them together): it goes in the
    // same message.
    if (entry_home == home) {
      lock.arg0 |= kRemoveEntry;
      lock.arg1 = parent.inode;
      lock.set_name(name);
      if (parent.distributed) lock.flags |= kDistributed;
    }
  }
  FsMessage locked;
  if (int error = call_status(home, lock, &locked); error != 0) {
    forget();
    return error;
  }
  if (home_only && locked.arg0 == kRemoveEntry) {
    forget();
    return 0;
  }
  // 2. Every server that may hold entries marks it, or refuses when it holds one.
  auto phase = [&](FsOp op, int& first_error) -> bool {
    std::vector<FsMessage> messages(servers.size(), request(op, directory));
    for (FsMessage& m : messages) {
      m.client = transport_->client();
      m.request = next_request_++;
    }
    if (!transport_->call_each(servers, messages)) return false;
    first_error = 0;
    for (const FsMessage& reply : messages) {
      if (reply.status != 0 && first_error == 0) first_error = reply.status;
    }
    return true;
  };
  if (!home_only) {
    int refused = 0;
    if (!phase(FsOp::rmdir_mark, refused)) return -EIO;
    // 3. Commit, or abort when anyone refused.
    int ignored = 0;
    if (refused != 0) {
      if (!phase(FsOp::rmdir_abort, ignored)) return -EIO;
      return refused;
    }
    if (!phase(FsOp::rmdir_commit, ignored)) return -EIO;
  }
  FsMessage unmap = request(FsOp::rm_map, parent.inode);
  unmap.set_name(name);
  unmap.arg0 = directory;
  unmap.flags = kDirOk | (parent.distributed ? kDistributed : 0);
  const int error = call_status(entry_home, unmap);
  forget();
  return error == -ENOENT ? 0 : error;
}

int Client::unlink(std::string_view path) {
  DirRef parent;
  std::string name;
  if (int error = walk(path, nullptr, parent, name, nullptr); error != 0) return error;
  if (name.empty()) return -EISDIR;
  FsMessage message = request(FsOp::rm_map, parent.inode);
  message.set_name(name);
  if (parent.distributed) message.flags |= kDistributed;
  FsMessage reply;
  const int error = call_status(
      entry_server(parent.inode, parent.distributed, name, transport_->servers()), message, &reply);
  lookups_.erase({parent.inode, name});
  if (error != 0) return error;
  if ((reply.flags & kLinkDropped) == 0) {
    FsMessage destroy = request(FsOp::destroy, reply.inode);
    const int dropped = call_status(home_of(reply.inode), destroy);
    if (dropped != 0 && dropped != -ENOENT) return dropped;
  }
  return 0;
}

int Client::rename(std::string_view from, std::string_view to) {
  DirRef source;
  std::string source_name;
  DirRef target;
  std::string target_name;
  std::vector<InodeNumber> source_chain;
  std::vector<InodeNumber> target_chain;
  if (int error = walk(from, nullptr, source, source_name, nullptr, &source_chain); error != 0) {
    return error;
  }
  if (int error = walk(to, nullptr, target, target_name, nullptr, &target_chain); error != 0) {
    return error;
  }
  if (source_name.empty() || target_name.empty()) return -EBUSY;
  Found found;
  if (int error = lookup(source, source_name, found); error != 0) return error;
  if (source.inode == target.inode && source_name == target_name) return 0;
  // As Linux: a directory cannot move into its own subtree, and nothing replaces an ancestor of
  // the source (which is never empty).
  auto in = [](const std::vector<InodeNumber>& chain, InodeNumber inode) {
    return std::find(chain.begin(), chain.end(), inode) != chain.end();
  };
  if (type_of_word(found.type) == FileType::directory && in(target_chain, found.inode)) {
    return -EINVAL;
  }
  // Only a directory above the source's own can hold an ancestor of the source.
  if (target.inode != source.inode && in(source_chain, target.inode)) {
    Found replaced;
    if (lookup(target, target_name, replaced) == 0 && in(source_chain, replaced.inode)) {
      return -ENOTEMPTY;
    }
  }
  const std::uint16_t servers = transport_->servers();

  // The new name first (ADD_MAP replaces atomically at its server), then the old one goes.
  FsMessage add = request(FsOp::add_map, target.inode);
  add.set_name(target_name);
  add.arg0 = found.inode;
  add.arg1 = found.type;
  add.flags = kReplace | (target.distributed ? kDistributed : 0);
  FsMessage added;
  const ServerIndex target_server =
      entry_server(target.inode, target.distributed, target_name, servers);
  const ServerIndex source_server =
      entry_server(source.inode, source.distributed, source_name, servers);
  // Both names at one server: the old one goes in the same message.
  const bool one_server = source_server == target_server;
  if (one_server) {
    add.flags |= kMoveEntry | (source.distributed ? kSourceDistributed : 0);
    add.arg2 = source.inode;
    add.set_extra(std::span(source_name.data(), source_name.size()));
  }
  const int error = call_status(target_server, add, &added);
  if (one_server) lookups_.erase({source.inode, source_name});
  if (error != 0) return error;
  lookups_.erase({target.inode, target_name});
  if (one_server) return destroy_replaced(added);

  FsMessage remove = request(FsOp::rm_map, source.inode);
  remove.set_name(source_name);
  remove.arg0 = found.inode;
  remove.flags = kKeepLink | (source.distributed ? kDistributed : 0);
  const int removed = call_status(source_server, remove);
  lookups_.erase({source.inode, source_name});
  if (removed != 0) {
    // Someone else moved or removed the source meanwhile: take the new name back.
    FsMessage undo = request(FsOp::rm_map, target.inode);
    undo.set_name(target_name);
    undo.arg0 = found.inode;
    undo.flags = kKeepLink | (target.distributed ? kDistributed : 0);
    (void)call_status(target_server, undo);
    return removed;
  }
  return destroy_replaced(added);
}

int Client::destroy_replaced(const FsMessage& added) {
  if (added.arg0 == 0 || (added.flags & kLinkDropped) != 0) return 0;
  FsMessage destroy = request(FsOp::destroy, added.arg0);
  const int dropped = call_status(home_of(added.arg0), destroy);
  return dropped == -ENOENT ? 0 : dropped;
}

int Client::readdir(std::string_view path, std::vector<DirEntry>& out) {
  Found found;
  if (int error = resolve(path, true, found); error != 0) return error;
  if (type_of_word(found.type) != FileType::directory) return -ENOTDIR;
  return list(DirRef{found.inode, distributed_of_word(found.type)}, out);
}

int Client::readdir_fd(int fd, std::vector<DirEntry>& out) {
  const Description* d = description(fd);
  if (d == nullptr) return -EBADF;
  if (d->type != FileType::directory) return -ENOTDIR;
  return list(DirRef{d->inode, d->distributed}, out);
}

int Client::list(const DirRef& directory, std::vector<DirEntry>& out) {
  struct Cursor {
    ServerIndex server;
    std::string last;
  };
  std::vector<Cursor> cursors;
  if (directory.distributed) {
    for (ServerIndex s = 0; s < transport_->servers(); ++s) cursors.push_back({s, ""});
  } else {
    cursors.push_back({home_of(directory.inode), ""});
  }
  while (!cursors.empty()) {
    std::vector<ServerIndex> servers;
    std::vector<FsMessage> messages;
    for (const Cursor& cursor : cursors) {
      FsMessage message = request(FsOp::dirent, directory.inode);
      message.set_name(cursor.last);
      message.client = transport_->client();
      message.request = next_request_++;
      servers.push_back(cursor.server);
      messages.push_back(message);
    }
    if (!transport_->call_each(servers, messages)) return -EIO;
    std::vector<Cursor> next;
    for (std::size_t i = 0; i < messages.size(); ++i) {
      const FsMessage& reply = messages[i];
      if (reply.status != 0) return reply.status;
      std::string last;
      const bool parsed = for_each_dirent(reply, [&](std::string_view name, InodeNumber inode,
                                                     std::uint64_t type, const StatRecord* stat) {
        out.push_back(DirEntry{std::string(name), inode, type_of_word(type)});
        last = name;
        if (stat == nullptr) return;
        // The server counts this client among the name's lookers and the inode's holders.
        lookups_[{directory.inode, std::string(name)}] = CachedLookup{Found{inode, type}, cursors[i].server};
        FileStat kept;
        fill_file_stat(*stat, kept);
        keep_attributes(kept);
      });
      if (!parsed) return -EIO;
      if ((reply.flags & kEnd) != 0) continue;
      if (last.empty()) return -EIO;  // no entry and no end: the server would be asked forever
      next.push_back({cursors[i].server, std::move(last)});
    }
    cursors = std::move(next);
  }
  return 0;
}

int Client::truncate(std::string_view path, std::uint64_t size) {
  Found found;
  if (int error = resolve(path, true, found); error != 0) return error;
  FsMessage message = request(FsOp::trunc, found.inode);
  message.arg0 = size;
  return call_status(home_of(found.inode), message);
}

template <class Change>
int Client::on_path(std::string_view path, bool follow, Change change) {
  Found found;
  if (int error = resolve(path, follow, found); error != 0) return error;
  return change(found.inode);
}

template <class Change>
int Client::on_fd(int fd, Change change) {
  const Description* d = description(fd);
  return d == nullptr ? -EBADF : change(d->inode);
}

int Client::chmod(std::string_view path, std::uint32_t mode) {
  return on_path(path, true, [&](InodeNumber inode) { return chmod_inode(inode, mode); });
}

int Client::fchmod(int fd, std::uint32_t mode) {
  return on_fd(fd, [&](InodeNumber inode) { return chmod_inode(inode, mode); });
}

int Client::chmod_inode(InodeNumber inode, std::uint32_t mode) {
  FsMessage message = request(FsOp::chmod, inode);
  message.arg0 = mode;
  return call_status(home_of(inode), message);
}

int Client::chown(std::string_view path, std::uint32_t uid, std::uint32_t gid, bool follow) {
  return on_path(path, follow, [&](InodeNumber inode) { return chown_inode(inode, uid, gid); });
}

int Client::fchown(int fd, std::uint32_t uid, std::uint32_t gid) {
  return on_fd(fd, [&](InodeNumber inode) { return chown_inode(inode, uid, gid); });
}

int Client::chown_inode(InodeNumber inode, std::uint32_t uid, std::uint32_t gid) {
  FsMessage message = request(FsOp::chown, inode);
  message.arg0 = uid;
  message.arg1 = gid;
  return call_status(home_of(inode), message);
}

int Client::utimens(std::string_view path, std::uint64_t atime_ns, std::uint64_t mtime_ns, bool follow) {
  return on_path(path, follow, [&](InodeNumber inode) { return utimens_inode(inode, atime_ns, mtime_ns); });
}

int Client::futimens(int fd, std::uint64_t atime_ns, std::uint64_t mtime_ns) {
  return on_fd(fd, [&](InodeNumber inode) { return utimens_inode(inode, atime_ns, mtime_ns); });
}

int Client::utimens_inode(InodeNumber inode, std::uint64_t atime_ns, std::uint64_t mtime_ns) {
  // Published later, this client's writes would stamp their own mtime over the one set here: they
  // are published first, in the same message (tar writes a file, then sets its times).
  FsMessage message = request(FsOp::utimens, inode);
  message.arg0 = atime_ns;
  message.arg1 = mtime_ns;
  std::vector<Description*> published;
  for (const auto& d : fds_) {
    if (d == nullptr || d->inode != inode || !d->dirty) continue;
    message.flags = kPublish;
    message.arg2 = std::max(message.arg2, d->written_end);
    published.push_back(d.get());
  }
  if (int error = call_status(home_of(inode), message); error != 0) return error;
  for (Description* d : published) {
    d->size = std::max(d->size, d->written_end);
    d->dirty = false;
  }
  return 0;
}

int Client::symlink(std::string_view target, std::string_view path) {
  if (target.empty()) return -ENOENT;
  if (target.size() > kMaxTargetBytes) return -ENAMETOOLONG;
  DirRef parent;
  std::string name;
  if (int error = walk(path, nullptr, parent, name, nullptr); error != 0) return error;
  if (name.empty()) return -EEXIST;
  FsMessage message = request(FsOp::symlink, parent.inode);
  message.set_name(name);
  message.set_extra(std::span(target.data(), target.size()));
  if (parent.distributed) message.flags |= kDistributed;
  return call_status(entry_server(parent.inode, parent.distributed, name, transport_->servers()),
                     message);
}

int Client::readlink(std::string_view path, std::string& out) {
  Found found;
  if (int error = resolve(path, false, found); error != 0) return error;
  if (type_of_word(found.type) != FileType::symlink) return -EINVAL;
  return readlink_inode(found.inode, out);
}

int Client::share(int fd, ClientId child, SharedDescriptor& out) {
  Description* d = description(fd);
  if (d == nullptr) return -EBADF;
  if (int error = flush(*d); error != 0) return error;
  if (d->server_descriptor == kNoServerDescriptor) {  // nothing at a server to share
    out = SharedDescriptor{d->inode, kNoServerDescriptor, d->flags, d->type};
    return 0;
  }
  FsMessage message = request(FsOp::dup, d->inode);
  message.arg0 = d->server_descriptor;
  message.arg1 = d->offset;
  message.arg2 = child;
  if (int error = call_status(home_of(d->inode), message); error != 0) return error;
  d->shared = true;
  out = SharedDescriptor{d->inode, d->server_descriptor, d->flags, d->type};
  return 0;
}

int Client::inherit(const SharedDescriptor& shared) {
  if (open_descriptors() >= options_.max_descriptors) return -EMFILE;
  const int fd = describe(Found{shared.inode, type_word(shared.type, false)},
                          static_cast<int>(shared.flags), shared.server_descriptor, 0);
  fds_[static_cast<std::size_t>(fd)]->shared = shared.server_descriptor != kNoServerDescriptor;
  return fd;
}

int Client::open_inode(InodeNumber inode, int flags) {
  if (open_descriptors() >= options_.max_descriptors) return -EMFILE;
  FsMessage message = request(FsOp::open, inode);
  message.flags = kByInode;
  message.arg0 = static_cast<std::uint32_t>(flags) & ~static_cast<std::uint32_t>(O_CREAT | O_EXCL | O_TRUNC);
  FsMessage reply;
  if (int error = call_status(home_of(inode), message, &reply); error != 0) return error;
  return describe(Found{reply.inode, reply.arg2}, flags, reply.arg0, reply.arg1, reply.extra());
}

int Client::describe_fd(int fd, SharedDescriptor& out) const {
  if (fd < 0 || static_cast<std::size_t>(fd) >= fds_.size() || fds_[static_cast<std::size_t>(fd)] == nullptr) {
    return -EBADF;
  }
  const Description& d = *fds_[static_cast<std::size_t>(fd)];
  out = SharedDescriptor{d.inode, d.server_descriptor, d.flags, d.type};
  return 0;
}

int Client::refresh(int fd, std::uint64_t at_least) {
  Description* d = description(fd);
  if (d == nullptr) return -EBADF;
  FileStat stat;
  if (int error = stat_inode(d->inode, stat); error != 0) return error;
  const std::uint64_t size = std::max(stat.size, at_least);
  // A file cut shorter meanwhile has a new block list past the cut.
  if (size < d->size) d->blocks.clear();
  d->size = size;
  return 0;
}

}  // namespace flotilla::fs
