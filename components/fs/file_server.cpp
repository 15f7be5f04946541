#include "components/fs/file_server.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "dataplane/hash.hpp"

namespace flotilla::fs {
namespace {

class NullOutputs final : public ServerOutputs {
 public:
  void send(ClientId, const FsMessage&) override {}
};

std::uint32_t mode_bits(FileType type) {
  switch (type) {
    case FileType::directory: return S_IFDIR;
    case FileType::symlink: return S_IFLNK;
    default: return S_IFREG;
  }
}

bool writes(std::uint32_t open_flags) { return (open_flags & O_ACCMODE) != O_RDONLY; }

std::uint64_t blocks_for(std::uint64_t bytes) { return (bytes + kBlockBytes - 1) / kBlockBytes; }

// The largest file: what 32-bit block ids could ever address.
constexpr std::uint64_t kMaxFileBytes = std::uint64_t{1} << 40;

// ---- Checkpoint image encoding ----
class ImageWriter {
 public:
  template <class T>
  void put(T value) {
    const auto* bytes = reinterpret_cast<const std::byte*>(&value);
    out_.insert(out_.end(), bytes, bytes + sizeof(T));
  }
  void put_bytes(std::span<const std::byte> bytes) {
    put(static_cast<std::uint32_t>(bytes.size()));
    out_.insert(out_.end(), bytes.begin(), bytes.end());
  }
  void put_string(std::string_view text) { put_bytes(std::as_bytes(std::span(text))); }
  std::vector<std::byte>& bytes() { return out_; }

 private:
  std::vector<std::byte> out_;
};

class ImageReader {
 public:
  explicit ImageReader(std::span<const std::byte> in) : in_(in) {}
  template <class T>
  bool get(T& value) {
    if (in_.size() - at_ < sizeof(T)) return false;
    std::memcpy(&value, in_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return true;
  }
  bool get_bytes(std::span<const std::byte>& bytes, std::size_t limit) {
    std::uint32_t length = 0;
    if (!get(length) || length > limit || in_.size() - at_ < length) return false;
    bytes = in_.subspan(at_, length);
    at_ += length;
    return true;
  }
  bool get_string(std::string& text, std::size_t limit) {
    std::span<const std::byte> bytes;
    if (!get_bytes(bytes, limit)) return false;
    text.assign(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    return true;
  }
  // A count of items of at least `item_bytes` each must fit what is left.
  bool get_count(std::uint64_t& count, std::size_t item_bytes) {
    return get(count) && count <= (in_.size() - at_) / std::max<std::size_t>(item_bytes, 1);
  }
  bool done() const { return at_ == in_.size(); }

 private:
  std::span<const std::byte> in_;
  std::size_t at_ = 0;
};

Error corrupt(const char* context) { return Error{Errc::bad_layout, 0, context}; }

constexpr std::uint64_t kImageMagic = 0x31474d4953465346ull;  // "FSFSIMG1"

}  // namespace

FileServer::FileServer(const ServerConfig& config, BlockCache cache)
    : config_(config), cache_(cache), allocator_(cache.partition(config.self)) {}

Result<std::unique_ptr<FileServer>> FileServer::start(const ServerConfig& config,
                                                      std::span<std::byte> state,
                                                      BlockCache cache) {
  if (config.servers == 0 || config.self >= config.servers || cache.servers() != config.servers) {
    return Error{Errc::invalid_argument, 0, "file server: index, count and cache disagree"};
  }
  auto log = StateLog::attach(state, (std::uint64_t{config.servers} << 16) | config.self);
  if (!log) return log.error();
  std::unique_ptr<FileServer> server(new FileServer(config, cache));
  server->log_ = std::move(*log);
  if (server->log_.fresh()) {
    for (std::uint32_t i = 0; i < cache.partition(config.self).count; ++i) {
      auto block = cache.block(cache.partition(config.self).first + i);
      std::memset(block.data(), 0, block.size());
    }
    if (config.self == 0) {
      Inode root;
      root.type = FileType::directory;
      root.distributed = config.root_distributed;
      root.mode = S_IFDIR | 0755;
      root.nlink = 2;
      server->inodes_.emplace(kRootInode, std::move(root));
    }
    auto written = server->checkpoint();
    if (!written) return written.error();
    return server;
  }
  auto loaded = server->load(server->log_.checkpoint());
  if (!loaded) return loaded.error();
  server->replaying_ = true;
  auto replayed = server->log_.replay(
      [&](std::span<const std::byte> record) { return server->replay_record(record); });
  server->replaying_ = false;
  if (!replayed) return replayed.error();
  server->stats_.replayed = *replayed;
  // Blocks freed by replayed changes may have missed their zeroing when the crash came.
  for (BlockId id : server->released_in_replay_) {
    if (server->allocator_.is_free(id)) {
      auto block = cache.block(id);
      std::memset(block.data(), 0, block.size());
    }
  }
  server->released_in_replay_.clear();
  return server;
}

Status FileServer::replay_record(std::span<const std::byte> record) {
  if (record.size() < sizeof(std::uint64_t)) return corrupt("fs log record too short");
  std::uint64_t now = 0;
  std::memcpy(&now, record.data(), sizeof(now));
  auto request = decode(record.subspan(sizeof(now)));
  if (!request) return corrupt("fs log record does not decode");
  NullOutputs none;
  const FsMessage reply = execute(*request, now, none);
  remember_reply(*request, reply);
  changed_.clear();  // nobody holds attributes of a server that is starting
  return {};
}

Status FileServer::log_request(const FsMessage& request, std::uint64_t now_ns) {
  std::array<std::byte, sizeof(std::uint64_t) + kHeaderBytes + kMaxPayload> record{};
  std::memcpy(record.data(), &now_ns, sizeof(now_ns));
  const std::size_t size = encode(request, std::span(record).subspan(sizeof(now_ns)));
  const std::span<const std::byte> body(record.data(), sizeof(now_ns) + size);
  auto appended = log_.append(body);
  if (appended || appended.error().code != Errc::exhausted) return appended;
  auto written = checkpoint();
  if (!written) return written;
  return log_.append(body);
}

std::vector<std::byte> FileServer::image() const {
  ImageWriter w;
  w.put(kImageMagic);
  w.put(next_local_);
  w.put(next_descriptor_);
  w.put(static_cast<std::uint64_t>(inodes_.size()));
  for (const auto& [number, inode] : inodes_) {
    w.put(number);
    w.put(static_cast<std::uint8_t>(inode.type));
    w.put(static_cast<std::uint8_t>(inode.distributed));
    w.put(inode.mode);
    w.put(inode.uid);
    w.put(inode.gid);
    w.put(inode.nlink);
    w.put(inode.size);
    w.put(inode.atime);
    w.put(inode.mtime);
    w.put(inode.ctime);
    w.put_bytes(std::as_bytes(std::span(inode.blocks)));
    w.put_bytes(std::as_bytes(std::span(inode.retired)));
    w.put_string(inode.target);
  }
  w.put(static_cast<std::uint64_t>(entries_.size()));
  for (const auto& [key, entry] : entries_) {
    w.put(key.first);
    w.put_string(key.second);
    w.put(entry.inode);
    w.put(entry.type);
  }
  w.put(static_cast<std::uint64_t>(marked_.size()));
  for (const auto& [directory, client] : marked_) {
    w.put(directory);
    w.put(client);
  }
  w.put(static_cast<std::uint64_t>(removed_.size()));
  for (InodeNumber directory : removed_) w.put(directory);
  w.put(static_cast<std::uint64_t>(rmdir_locks_.size()));
  for (const auto& [directory, client] : rmdir_locks_) {
    w.put(directory);
    w.put(client);
  }
  w.put(static_cast<std::uint64_t>(descriptors_.size()));
  for (const auto& [id, descriptor] : descriptors_) {
    w.put(id);
    w.put(descriptor.inode);
    w.put(descriptor.offset);
    w.put(descriptor.flags);
    w.put_bytes(std::as_bytes(std::span(descriptor.holders)));
  }
  w.put(static_cast<std::uint64_t>(last_reply_.size()));
  for (const auto& [client, reply] : last_reply_) {
    std::array<std::byte, kHeaderBytes + kMaxPayload> bytes{};
    const std::size_t size = encode(reply, bytes);
    w.put(client);
    w.put_bytes(std::span(bytes.data(), size));
  }
  return std::move(w.bytes());
}

Status FileServer::load(std::span<const std::byte> image) {
  ImageReader r(image);
  std::uint64_t magic = 0;
  if (!r.get(magic) || magic != kImageMagic) return corrupt("fs checkpoint: bad magic");
  if (!r.get(next_local_) || !r.get(next_descriptor_)) return corrupt("fs checkpoint: counters");
  std::vector<BlockId> used;
  std::uint64_t count = 0;
  if (!r.get_count(count, 40)) return corrupt("fs checkpoint: inode count");
  for (std::uint64_t i = 0; i < count; ++i) {
    InodeNumber number = 0;
    Inode inode;
    std::uint8_t type = 0;
    std::uint8_t distributed = 0;
    std::span<const std::byte> blocks;
    std::span<const std::byte> retired;
    const bool read = r.get(number) && r.get(type) && r.get(distributed) && r.get(inode.mode) &&
                      r.get(inode.uid) && r.get(inode.gid) && r.get(inode.nlink) &&
                      r.get(inode.size) && r.get(inode.atime) && r.get(inode.mtime) &&
                      r.get(inode.ctime) && r.get_bytes(blocks, image.size()) &&
                      r.get_bytes(retired, image.size()) &&
                      r.get_string(inode.target, kMaxTargetBytes);
    if (!read || type == 0 || type > kLastFileType || distributed > 1 ||
        home_of(number) != config_.self || (number & ((1ull << kServerShift) - 1)) >= next_local_ ||
        blocks.size() % sizeof(BlockId) != 0 || retired.size() % sizeof(BlockId) != 0) {
      return corrupt("fs checkpoint: inode");
    }
    inode.type = static_cast<FileType>(type);
    inode.distributed = distributed != 0;
    inode.blocks.resize(blocks.size() / sizeof(BlockId));
    std::memcpy(inode.blocks.data(), blocks.data(), blocks.size());
    inode.retired.resize(retired.size() / sizeof(BlockId));
    std::memcpy(inode.retired.data(), retired.data(), retired.size());
    if (inode.blocks.size() != blocks_for(inode.size) && inode.blocks.size() < blocks_for(inode.size)) {
      return corrupt("fs checkpoint: size beyond blocks");
    }
    used.insert(used.end(), inode.blocks.begin(), inode.blocks.end());
    used.insert(used.end(), inode.retired.begin(), inode.retired.end());
    if (!inodes_.emplace(number, std::move(inode)).second) return corrupt("fs checkpoint: dup inode");
  }
  // Every block belongs to this partition and to one file only.
  std::vector<BlockId> sorted = used;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
    return corrupt("fs checkpoint: block shared by two files");
  }
  for (BlockId id : sorted) {
    if (!allocator_.owns(id)) return corrupt("fs checkpoint: block outside the partition");
  }
  if (!r.get_count(count, 20)) return corrupt("fs checkpoint: entry count");
  for (std::uint64_t i = 0; i < count; ++i) {
    EntryKey key;
    Entry entry;
    if (!r.get(key.first) || !r.get_string(key.second, kMaxNameBytes) || !r.get(entry.inode) ||
        !r.get(entry.type) || !valid_name(key.second) || entry.inode == 0 ||
        type_of_word(entry.type) == FileType::none ||
        static_cast<std::uint8_t>(type_of_word(entry.type)) > kLastFileType) {
      return corrupt("fs checkpoint: entry");
    }
    entries_.emplace(std::move(key), entry);
  }
  if (!r.get_count(count, 12)) return corrupt("fs checkpoint: marks");
  for (std::uint64_t i = 0; i < count; ++i) {
    InodeNumber directory = 0;
    ClientId client = 0;
    if (!r.get(directory) || !r.get(client)) return corrupt("fs checkpoint: marks");
    marked_[directory] = client;
  }
  if (!r.get_count(count, 8)) return corrupt("fs checkpoint: removed directories");
  for (std::uint64_t i = 0; i < count; ++i) {
    InodeNumber directory = 0;
    if (!r.get(directory)) return corrupt("fs checkpoint: removed directories");
    removed_.insert(directory);
  }
  if (!r.get_count(count, 12)) return corrupt("fs checkpoint: lock count");
  for (std::uint64_t i = 0; i < count; ++i) {
    InodeNumber directory = 0;
    ClientId client = 0;
    if (!r.get(directory) || !r.get(client)) return corrupt("fs checkpoint: lock");
    rmdir_locks_[directory] = client;
  }
  if (!r.get_count(count, 32)) return corrupt("fs checkpoint: descriptor count");
  for (std::uint64_t i = 0; i < count; ++i) {
    std::uint64_t id = 0;
    Descriptor descriptor;
    std::span<const std::byte> holders;
    if (!r.get(id) || !r.get(descriptor.inode) || !r.get(descriptor.offset) ||
        !r.get(descriptor.flags) || !r.get_bytes(holders, image.size()) || holders.empty() ||
        holders.size() % sizeof(ClientId) != 0 || id >= next_descriptor_) {
      return corrupt("fs checkpoint: descriptor");
    }
    auto inode = inodes_.find(descriptor.inode);
    if (inode == inodes_.end()) return corrupt("fs checkpoint: descriptor of no inode");
    ++inode->second.opens;
    descriptor.holders.resize(holders.size() / sizeof(ClientId));
    std::memcpy(descriptor.holders.data(), holders.data(), holders.size());
    descriptors_.emplace(id, std::move(descriptor));
  }
  if (!r.get_count(count, 12)) return corrupt("fs checkpoint: reply count");
  for (std::uint64_t i = 0; i < count; ++i) {
    ClientId client = 0;
    std::span<const std::byte> bytes;
    if (!r.get(client) || !r.get_bytes(bytes, kHeaderBytes + kMaxPayload)) {
      return corrupt("fs checkpoint: reply");
    }
    auto reply = decode(bytes);
    if (!reply || reply->op != FsOp::reply) return corrupt("fs checkpoint: reply");
    last_reply_[client] = *reply;
  }
  if (!r.done()) return corrupt("fs checkpoint: trailing bytes");
  allocator_.reset(used);
  return {};
}

Status FileServer::checkpoint() {
  const std::vector<std::byte> bytes = image();
  auto written = log_.write_checkpoint(bytes);
  if (!written) return written;
  // The free list a restart would rebuild from this checkpoint, so that replay allocates alike.
  std::vector<BlockId> used;
  for (const auto& [number, inode] : inodes_) {
    used.insert(used.end(), inode.blocks.begin(), inode.blocks.end());
    used.insert(used.end(), inode.retired.begin(), inode.retired.end());
  }
  allocator_.reset(used);
  ++stats_.checkpoints;
  return {};
}

void FileServer::receive(ClientId peer, const Message& chunk, std::uint64_t now_ns,
                         ServerOutputs& out) {
  auto assembled = assemblers_[peer].push(chunk);
  if (!assembled) {
    ++stats_.malformed;
    return;
  }
  if (*assembled) handle(peer, **assembled, now_ns, out);
}

bool FileServer::changes_state(const FsMessage& request) {
  switch (request.op) {
    case FsOp::dirent:
    case FsOp::resolve:
    case FsOp::readlink:
    case FsOp::fstat:
      return false;
    case FsOp::blocks:
      return request.arg1 != 0;
    default:
      return true;
  }
}

bool FileServer::creates_into(const FsMessage& request, InodeNumber& directory) const {
  const bool creates = request.op == FsOp::mkdir || request.op == FsOp::symlink ||
                       request.op == FsOp::add_map ||
                       (request.op == FsOp::open && (request.flags & kByInode) == 0 &&
                        (request.arg0 & O_CREAT) != 0);
  directory = request.inode;
  return creates;
}

bool FileServer::held_back(const FsMessage& request) {
  InodeNumber directory = 0;
  bool hold = false;
  if (creates_into(request, directory)) {
    hold = marked_.contains(directory) && !removed_.contains(directory);
  } else if (request.op == FsOp::rmdir_lock) {
    auto lock = rmdir_locks_.find(request.inode);
    hold = lock != rmdir_locks_.end() && lock->second != request.client;
  }
  if (!hold) return false;
  const bool queued = std::any_of(held_.begin(), held_.end(), [&](const FsMessage& m) {
    return m.client == request.client && m.request == request.request;
  });
  if (!queued) {
    held_.push_back(request);
    ++stats_.delayed;
  }
  return true;
}

void FileServer::handle(ClientId peer, const FsMessage& request, std::uint64_t now_ns,
                        ServerOutputs& out) {
  ++stats_.requests;
  if (!well_formed(request) || request.op == FsOp::reply || request.op == FsOp::invalidate ||
      request.client != peer || peer == 0) {
    ++stats_.malformed;
    return;
  }
  if (changes_state(request)) {
    auto cached = last_reply_.find(request.client);
    if (cached != last_reply_.end() && cached->second.request == request.request) {
      ++stats_.retried;
      out.send(request.client, cached->second);
      return;
    }
    // Older than the last change this client asked for: a request posted ahead of that one (a
    // CLOSE nobody waits for), sent again after a restart. It ran before the newer one, which
    // came after it on the same channel; running it again could close what was opened since.
    if (cached != last_reply_.end() && request.request < cached->second.request) {
      ++stats_.stale_retries;
      return;
    }
  }
  if (held_back(request)) return;
  run(request, now_ns, out);
}

void FileServer::run(const FsMessage& request, std::uint64_t now_ns, ServerOutputs& out) {
  const bool logged = changes_state(request);
  if (logged) {
    auto written = log_request(request, now_ns);
    if (!written) {
      out.send(request.client, reply_to(request, -ENOSPC));
      return;
    }
  }
  const FsMessage reply = execute(request, now_ns, out);
  if (logged) remember_reply(request, reply);
  invalidate_changed(out);
  out.send(request.client, reply);
  const bool releases = request.op == FsOp::rmdir_commit || request.op == FsOp::rmdir_abort ||
                        (request.op == FsOp::close && (request.flags & kAll) != 0);
  if (releases) release_held(request.inode, now_ns, out);
}

void FileServer::remember_reply(const FsMessage& request, const FsMessage& reply) {
  // A client's end (CLOSE of everything, client_gone's notice) keeps nothing: the seat's next
  // holder numbers its requests afresh, and none may be taken for a retry of an older one.
  if (request.op == FsOp::close && (request.flags & kAll) != 0) {
    last_reply_.erase(request.client);
  } else {
    last_reply_[request.client] = reply;
  }
}

void FileServer::release_held(InodeNumber, std::uint64_t now_ns, ServerOutputs& out) {
  std::deque<FsMessage> waiting;
  waiting.swap(held_);
  for (const FsMessage& request : waiting) {
    if (!held_back(request)) run(request, now_ns, out);
  }
}

void FileServer::client_gone(ClientId client, std::uint64_t now_ns, ServerOutputs& out) {
  FsMessage notice;
  notice.op = FsOp::close;
  notice.flags = kAll;
  notice.client = client;
  notice.request = ~0ull;
  std::erase_if(held_, [&](const FsMessage& m) { return m.client == client; });
  run(notice, now_ns, out);
  last_reply_.erase(client);
}

FsMessage FileServer::execute(const FsMessage& request, std::uint64_t now, ServerOutputs& out) {
  // Requests that must reach the server holding their inode or entry.
  const bool by_name = request.op == FsOp::mkdir || request.op == FsOp::add_map ||
                       request.op == FsOp::rm_map || request.op == FsOp::resolve ||
                       request.op == FsOp::symlink ||
                       (request.op == FsOp::open && (request.flags & kByInode) == 0);
  if (by_name) {
    const bool distributed = (request.flags & kDistributed) != 0;
    if (entry_server(request.inode, distributed, request.name(), config_.servers) != config_.self) {
      return reply_to(request, -ESTALE);
    }
    if (removed_.contains(request.inode)) return reply_to(request, -ENOENT);
    if (home_of(request.inode) == config_.self) {
      auto directory = inodes_.find(request.inode);
      if (directory == inodes_.end()) return reply_to(request, -ENOENT);
      if (directory->second.type != FileType::directory) return reply_to(request, -ENOTDIR);
    }
  }
  switch (request.op) {
    case FsOp::mkdir:
      return do_mkdir(request, now);
    case FsOp::rmdir_lock:
    case FsOp::rmdir_mark:
    case FsOp::rmdir_commit:
    case FsOp::rmdir_abort:
      return do_rmdir(request, out);
    case FsOp::dirent:
      return do_dirent(request);
    case FsOp::add_map:
      return do_add_map(request, now, out);
    case FsOp::rm_map:
      return do_rm_map(request, now, out);
    case FsOp::resolve:
      return do_resolve(request);
    case FsOp::symlink:
      return do_symlink(request, now);
    case FsOp::open:
      return do_open(request, now);
    case FsOp::dup:
    case FsOp::lseek:
    case FsOp::close:
    case FsOp::read:
    case FsOp::write:
      return do_descriptor_op(request, now);
    case FsOp::create: {
      const FileType type = type_of_word(request.arg1);
      if (type == FileType::directory) return reply_to(request, -EINVAL);
      auto inode = new_inode(type, static_cast<std::uint32_t>(request.arg0), now);
      if (!inode) return reply_to(request, -ENOSPC);
      inodes_[*inode].nlink = 1;
      FsMessage reply = reply_to(request, 0);
      reply.inode = *inode;
      return reply;
    }
    default:
      return do_inode_op(request, now);
  }
}

Result<InodeNumber> FileServer::new_inode(FileType type, std::uint32_t mode, std::uint64_t now) {
  if (inodes_.size() >= config_.max_inodes || next_local_ >= (1ull << kServerShift)) {
    return Error{Errc::exhausted, 0, "inode table full"};
  }
  const InodeNumber number = make_inode(config_.self, next_local_++);
  Inode inode;
  inode.type = type;
  inode.mode = mode_bits(type) | (mode & 07777);
  inode.nlink = type == FileType::directory ? 2 : 1;
  inode.atime = inode.mtime = inode.ctime = now;
  inodes_.emplace(number, std::move(inode));
  return number;
}

FsMessage FileServer::do_mkdir(const FsMessage& request, std::uint64_t now) {
  const EntryKey key(request.inode, std::string(request.name()));
  if (entries_.contains(key)) return reply_to(request, -EEXIST);
  auto number = new_inode(FileType::directory, static_cast<std::uint32_t>(request.arg0), now);
  if (!number) return reply_to(request, -ENOSPC);
  const bool distributed = request.arg1 == 1 && config_.servers > 1;
  inodes_[*number].distributed = distributed;
  entries_[key] = Entry{*number, type_word(FileType::directory, distributed)};
  remember_looker(key, request.client);
  FsMessage reply = reply_to(request, 0);
  reply.inode = *number;
  reply.arg1 = type_word(FileType::directory, distributed);
  return reply;
}

FsMessage FileServer::do_rmdir(const FsMessage& request, ServerOutputs& out) {
  const InodeNumber directory = request.inode;
  const bool home = home_of(directory) == config_.self;
  auto has_entries = [&] {
    auto it = entries_.lower_bound(EntryKey(directory, std::string()));
    return it != entries_.end() && it->first.first == directory;
  };
  switch (request.op) {
    case FsOp::rmdir_lock: {
      if (!home) return reply_to(request, -ESTALE);
      auto inode = inodes_.find(directory);
      if (inode == inodes_.end()) return reply_to(request, -ENOENT);
      if (inode->second.type != FileType::directory) return reply_to(request, -ENOTDIR);
      if (directory == kRootInode) return reply_to(request, -EBUSY);
      if ((request.arg0 & kRemoveAtHome) != 0) {
        // The three phases at once (the home holds every entry, and runs one request at a time);
        // a refusal leaves nothing locked.
        if (removed_.contains(directory)) return reply_to(request, -ENOENT);
        if (has_entries()) return reply_to(request, -ENOTEMPTY);
        removed_.insert(directory);
        inode->second.nlink = 0;
        note_changed(directory);
        maybe_free(directory);
        FsMessage reply = reply_to(request, 0);
        if ((request.arg0 & kRemoveEntry) != 0 && remove_entry_of(request, directory, out)) {
          reply.arg0 = kRemoveEntry;
        }
        return reply;
      }
      rmdir_locks_[directory] = request.client;
      return reply_to(request, 0);
    }
    case FsOp::rmdir_mark:
      if (removed_.contains(directory)) return reply_to(request, -ENOENT);
      if (has_entries()) return reply_to(request, -ENOTEMPTY);
      marked_[directory] = request.client;
      return reply_to(request, 0);
    case FsOp::rmdir_commit:
      if (has_entries()) return reply_to(request, -ENOTEMPTY);  // unmarked, so never here
      marked_.erase(directory);
      removed_.insert(directory);
      if (home) {
        rmdir_locks_.erase(directory);
        auto inode = inodes_.find(directory);
        if (inode != inodes_.end()) {
          inode->second.nlink = 0;
          note_changed(directory);
          maybe_free(directory);
        }
      }
      return reply_to(request, 0);
    default:  // abort
      marked_.erase(directory);
      if (home) {
        auto lock = rmdir_locks_.find(directory);
        if (lock != rmdir_locks_.end() && lock->second == request.client) rmdir_locks_.erase(lock);
      }
      return reply_to(request, 0);
  }
}

bool FileServer::remove_entry_of(const FsMessage& request, InodeNumber directory, ServerOutputs& out) {
  const InodeNumber parent = request.arg1;
  const bool distributed = (request.flags & kDistributed) != 0;
  if (entry_server(parent, distributed, request.name(), config_.servers) != config_.self) return false;
  EntryKey key(parent, std::string(request.name()));
  auto entry = entries_.find(key);
  // Another name now, or gone (a rename or rmdir by someone else): the entry is not this one's.
  if (entry == entries_.end() || entry->second.inode != directory) return false;
  entries_.erase(entry);
  invalidate(key, 0, out);
  return true;
}

FsMessage FileServer::do_dirent(const FsMessage& request) {
  FsMessage reply = reply_to(request, 0);
  auto it = entries_.upper_bound(EntryKey(request.inode, std::string(request.name())));
  for (; it != entries_.end() && it->first.first == request.inode; ++it) {
    // A subdirectory held here comes with its attributes: a walker (find, os.walk) stats each
    // one it descends into, and the listing answers that. A file's attributes would cost more
    // listing messages than the stats they save for a plain `ls` or readdir.
    auto inode = type_of_word(it->second.type) == FileType::directory ? inodes_.find(it->second.inode)
                                                                       : inodes_.end();
    if (inode == inodes_.end()) {
      if (!put_dirent(reply, it->first.second, it->second.inode, it->second.type)) return reply;
      continue;
    }
    const StatRecord stat = stat_record(it->second.inode, inode->second);
    if (!put_dirent(reply, it->first.second, it->second.inode, it->second.type, &stat)) return reply;
    remember_looker(it->first, request.client);
    remember_attribute_holder(it->second.inode, request.client);
  }
  reply.flags = kEnd;
  return reply;
}

FsMessage FileServer::do_add_map(const FsMessage& request, std::uint64_t, ServerOutputs& out) {
  const EntryKey key(request.inode, std::string(request.name()));
  const Entry wanted{request.arg0, request.arg1};
  FsMessage reply = reply_to(request, 0);
  // A rename within this server: the old entry is checked first, so a refusal changes nothing.
  std::optional<EntryKey> moved_from;
  if ((request.flags & kMoveEntry) != 0) {
    const auto source = request.extra();
    moved_from.emplace(request.arg2, std::string(source.data(), source.size()));
    const bool distributed = (request.flags & kSourceDistributed) != 0;
    if (entry_server(moved_from->first, distributed, moved_from->second, config_.servers) != config_.self) {
      return reply_to(request, -ESTALE);
    }
    if (*moved_from == key) return reply_to(request, -EINVAL);
    auto old = entries_.find(*moved_from);
    if (old == entries_.end() || old->second.inode != wanted.inode) return reply_to(request, -ENOENT);
  }
  auto take_old = [&] {
    if (!moved_from) return;
    entries_.erase(*moved_from);
    invalidate(*moved_from, 0, out);
  };
  auto existing = entries_.find(key);
  if (existing != entries_.end()) {
    if (existing->second.inode == wanted.inode) {  // already there (a retried rename)
      take_old();
      return reply;
    }
    if ((request.flags & kReplace) == 0) return reply_to(request, -EEXIST);
    const bool old_dir = type_of_word(existing->second.type) == FileType::directory;
    const bool new_dir = type_of_word(wanted.type) == FileType::directory;
    if (old_dir && !new_dir) return reply_to(request, -EISDIR);
    if (!old_dir && new_dir) return reply_to(request, -ENOTDIR);
    if (old_dir && new_dir) return reply_to(request, -ENOTEMPTY);
    reply.arg0 = existing->second.inode;
    existing->second = wanted;
    invalidate(key, 0, out);
    take_old();
    if (home_of(reply.arg0) == config_.self) {
      drop_link(reply.arg0);
      reply.flags = kLinkDropped;
    }
    return reply;
  }
  entries_.emplace(key, wanted);
  take_old();
  return reply;
}

FsMessage FileServer::do_rm_map(const FsMessage& request, std::uint64_t, ServerOutputs& out) {
  const EntryKey key(request.inode, std::string(request.name()));
  auto existing = entries_.find(key);
  if (existing == entries_.end()) return reply_to(request, -ENOENT);
  if (request.arg0 != 0 && existing->second.inode != request.arg0) return reply_to(request, -ENOENT);
  const bool is_dir = type_of_word(existing->second.type) == FileType::directory;
  if (is_dir && (request.flags & (kDirOk | kKeepLink)) == 0) return reply_to(request, -EISDIR);
  if (!is_dir && (request.flags & kDirOk) != 0) return reply_to(request, -ENOTDIR);
  FsMessage reply = reply_to(request, 0);
  reply.inode = existing->second.inode;
  reply.arg1 = existing->second.type;
  entries_.erase(existing);
  invalidate(key, 0, out);
  if ((request.flags & kKeepLink) == 0 && !is_dir && home_of(reply.inode) == config_.self) {
    drop_link(reply.inode);
    reply.flags = kLinkDropped;
  }
  return reply;
}

FsMessage FileServer::do_resolve(const FsMessage& request) {
  EntryKey key(request.inode, std::string(request.name()));
  auto existing = entries_.find(key);
  if (existing == entries_.end()) return reply_to(request, -ENOENT);
  FsMessage reply = reply_to(request, 0);
  reply.inode = existing->second.inode;
  reply.arg1 = existing->second.type;
  // stat in one message: the inode's attributes come along when this server is its home.
  if (request.arg0 == kResolveWithStat) {
    auto inode = inodes_.find(reply.inode);
    if (inode != inodes_.end()) {
      put_stat(reply, stat_record(reply.inode, inode->second));
      remember_attribute_holder(reply.inode, request.client);
    }
  }
  remember_looker(std::move(key), request.client);
  return reply;
}

void FileServer::remember_looker(EntryKey key, ClientId client) {
  if (replaying_) return;
  auto& lookers = lookers_[std::move(key)];
  if (std::find(lookers.begin(), lookers.end(), client) == lookers.end()) lookers.push_back(client);
}

void FileServer::remember_attribute_holder(InodeNumber inode, ClientId client) {
  if (replaying_) return;
  auto& holders = attribute_holders_[inode];
  if (std::find(holders.begin(), holders.end(), client) == holders.end()) holders.push_back(client);
}

void FileServer::note_changed(InodeNumber inode) {
  if (attribute_holders_.contains(inode)) changed_.push_back(inode);
}

void FileServer::invalidate_changed(ServerOutputs& out) {
  for (InodeNumber inode : changed_) {
    auto holders = attribute_holders_.find(inode);
    if (holders == attribute_holders_.end()) continue;  // told already
    FsMessage message;
    message.op = FsOp::invalidate;
    message.flags = kAttributes;
    message.inode = inode;
    for (ClientId client : holders->second) {
      message.client = client;
      out.send(client, message);
      ++stats_.invalidations;
    }
    attribute_holders_.erase(holders);
  }
  changed_.clear();
}

FsMessage FileServer::do_symlink(const FsMessage& request, std::uint64_t now) {
  const EntryKey key(request.inode, std::string(request.name()));
  if (entries_.contains(key)) return reply_to(request, -EEXIST);
  auto number = new_inode(FileType::symlink, 0777, now);
  if (!number) return reply_to(request, -ENOSPC);
  Inode& inode = inodes_[*number];
  inode.target.assign(request.extra().data(), request.extra().size());
  inode.size = inode.target.size();
  entries_[key] = Entry{*number, type_word(FileType::symlink, false)};
  FsMessage reply = reply_to(request, 0);
  reply.inode = *number;
  return reply;
}

FsMessage FileServer::do_open(const FsMessage& request, std::uint64_t now) {
  const auto flags = static_cast<std::uint32_t>(request.arg0);
  InodeNumber number = request.inode;
  if ((request.flags & kByInode) == 0) {
    const EntryKey key(request.inode, std::string(request.name()));
    auto existing = entries_.find(key);
    if (existing == entries_.end()) {
      if ((flags & O_CREAT) == 0) return reply_to(request, -ENOENT);
      auto created = new_inode(FileType::regular, static_cast<std::uint32_t>(request.arg1), now);
      if (!created) return reply_to(request, -ENOSPC);
      entries_[key] = Entry{*created, type_word(FileType::regular, false)};
      number = *created;
    } else {
      if ((flags & O_CREAT) != 0 && (flags & O_EXCL) != 0) return reply_to(request, -EEXIST);
      number = existing->second.inode;
    }
    // The client keeps what an open by name found, as after a RESOLVE.
    remember_looker(key, request.client);
    if (existing != entries_.end()) {
      if (home_of(number) != config_.self) {
        FsMessage reply = reply_to(request, 0);  // open it at its home
        reply.inode = number;
        reply.arg2 = existing->second.type;
        reply.flags = kByInode;
        return reply;
      }
    }
  } else if (home_of(number) != config_.self) {
    return reply_to(request, -ESTALE);
  }
  auto found = inodes_.find(number);
  if (found == inodes_.end()) return reply_to(request, -ENOENT);
  Inode& inode = found->second;
  if (inode.type == FileType::directory && writes(flags)) return reply_to(request, -EISDIR);
  if (inode.type != FileType::directory && (flags & O_DIRECTORY) != 0) {
    return reply_to(request, -ENOTDIR);
  }
  if (inode.type == FileType::symlink) return reply_to(request, -ELOOP);
  if (descriptors_.size() >= config_.max_descriptors) return reply_to(request, -EMFILE);
  if ((flags & O_TRUNC) != 0 && writes(flags) && inode.type == FileType::regular) {
    resize(inode, 0, inode.opens > 0);
    inode.mtime = inode.ctime = now;
    note_changed(number);
  }
  // An empty file opened for writing gets its first blocks now, for as many bytes as the client
  // expects to write (arg2: what its last file grew to): a stream of like files (tar's small
  // ones, Hare's 10 x 4 KiB) is written with no BLOCKS, and a create left empty takes none. A
  // cache too full for them gives one block; a full cache leaves it for the first write to ask.
  bool first_block = false;
  const std::uint64_t expected = std::min(request.arg2, kOpenGrantBytes);
  if (writes(flags) && inode.type == FileType::regular && inode.blocks.empty() && expected > 0) {
    first_block = allocate_up_to(inode, expected) == 0 || allocate_up_to(inode, kBlockBytes) == 0;
  }
  if (first_block) note_changed(number);
  const std::uint64_t id = next_descriptor_++;
  Descriptor descriptor;
  descriptor.inode = number;
  descriptor.flags = flags;
  descriptor.holders.push_back(request.client);
  descriptors_.emplace(id, std::move(descriptor));
  ++inode.opens;
  FsMessage reply = reply_to(request, 0);
  reply.inode = number;
  reply.arg0 = id;
  reply.arg1 = inode.size;
  reply.arg2 = type_word(inode.type, inode.distributed);
  if (first_block) {
    reply.set_extra(std::span(reinterpret_cast<const char*>(inode.blocks.data()), inode.blocks.size() * sizeof(BlockId)));
  }
  return reply;
}

FsMessage FileServer::do_descriptor_op(const FsMessage& request, std::uint64_t now) {
  if (request.op == FsOp::close && (request.flags & kAll) != 0) {
    std::vector<std::uint64_t> ids;
    for (auto& [id, descriptor] : descriptors_) {
      std::erase(descriptor.holders, request.client);
      if (descriptor.holders.empty()) ids.push_back(id);
    }
    for (std::uint64_t id : ids) close_descriptor(id);
    std::erase_if(rmdir_locks_, [&](const auto& lock) { return lock.second == request.client; });
    std::erase_if(marked_, [&](const auto& mark) { return mark.second == request.client; });
    return reply_to(request, 0);
  }
  auto found = descriptors_.find(request.arg0);
  if (found == descriptors_.end()) return reply_to(request, -EBADF);
  Descriptor& descriptor = found->second;
  auto holder = std::find(descriptor.holders.begin(), descriptor.holders.end(), request.client);
  if (holder == descriptor.holders.end()) return reply_to(request, -EBADF);
  Inode& inode = inodes_.at(descriptor.inode);
  FsMessage reply = reply_to(request, 0);
  reply.inode = descriptor.inode;
  switch (request.op) {
    case FsOp::dup:
      if (request.arg2 == 0 || request.arg2 > 0xffffffffu) return reply_to(request, -EINVAL);
      if (descriptor.holders.size() == 1) descriptor.offset = request.arg1;
      descriptor.holders.push_back(static_cast<ClientId>(request.arg2));
      return reply;
    case FsOp::close: {
      // What the closing writer published goes first; the descriptor closes whatever it says.
      const int published = (request.flags & kPublish) != 0 ? publish(inode, request.arg2, 0, now) : 0;
      if ((request.flags & kPublish) != 0) note_changed(descriptor.inode);
      descriptor.holders.erase(holder);
      if (descriptor.holders.empty()) close_descriptor(request.arg0);
      return published != 0 ? reply_to(request, published) : reply;
    }
    case FsOp::lseek: {
      const auto offset = static_cast<std::int64_t>(request.arg1);
      std::int64_t base = 0;
      if (request.arg2 == SEEK_CUR) {
        base = static_cast<std::int64_t>(descriptor.offset);
      } else if (request.arg2 == SEEK_END) {
        base = static_cast<std::int64_t>(inode.size);
      } else if (request.arg2 != SEEK_SET) {
        return reply_to(request, -EINVAL);
      }
      if ((offset > 0 && base > INT64_MAX - offset) || base + offset < 0) {
        return reply_to(request, -EINVAL);
      }
      descriptor.offset = static_cast<std::uint64_t>(base + offset);
      reply.arg0 = descriptor.offset;
      break;
    }
    case FsOp::read: {
      if ((descriptor.flags & O_ACCMODE) == O_WRONLY) return reply_to(request, -EBADF);
      if (inode.type == FileType::directory) return reply_to(request, -EISDIR);
      const std::uint64_t start = descriptor.offset;
      const std::uint64_t left = start < inode.size ? inode.size - start : 0;
      reply.arg0 = start;
      reply.arg1 = std::min(left, request.arg1);
      descriptor.offset = start + reply.arg1;
      break;
    }
    default: {  // write
      if (!writes(descriptor.flags)) return reply_to(request, -EBADF);
      const std::uint64_t start = (descriptor.flags & O_APPEND) != 0 ? inode.size : descriptor.offset;
      if (request.arg1 > kMaxFileBytes || start > kMaxFileBytes - request.arg1) {
        return reply_to(request, -EFBIG);
      }
      const std::uint64_t end = start + request.arg1;
      if (int error = allocate_up_to(inode, end); error != 0) return reply_to(request, error);
      inode.size = std::max(inode.size, end);
      inode.mtime = inode.ctime = now;
      note_changed(descriptor.inode);
      descriptor.offset = end;
      reply.arg0 = start;
      reply.arg1 = request.arg1;
      break;
    }
  }
  reply.arg2 = inode.size;
  if (descriptor.holders.size() == 1) reply.flags = kSoleHolder;
  return reply;
}

FsMessage FileServer::do_inode_op(const FsMessage& request, std::uint64_t now) {
  if (home_of(request.inode) != config_.self) return reply_to(request, -ESTALE);
  auto found = inodes_.find(request.inode);
  if (found == inodes_.end()) return reply_to(request, -ENOENT);
  Inode& inode = found->second;
  FsMessage reply = reply_to(request, 0);
  if (request.op != FsOp::fstat && request.op != FsOp::readlink && request.op != FsOp::blocks) {
    note_changed(request.inode);  // each of the others may change what FSTAT answers
  }
  switch (request.op) {
    case FsOp::destroy:
      if (inode.type == FileType::directory) return reply_to(request, -EISDIR);
      drop_link(request.inode);
      return reply;
    case FsOp::readlink:
      if (inode.type != FileType::symlink) return reply_to(request, -EINVAL);
      reply.set_extra(std::span(inode.target.data(), inode.target.size()));
      return reply;
    case FsOp::trunc: {
      if (inode.type == FileType::directory) return reply_to(request, -EISDIR);
      if (inode.type != FileType::regular) return reply_to(request, -EINVAL);
      if (request.arg0 > kMaxFileBytes) return reply_to(request, -EFBIG);
      if (int error = resize(inode, request.arg0, inode.opens > 0); error != 0) {
        return reply_to(request, error);
      }
      inode.mtime = inode.ctime = now;
      return reply;
    }
    case FsOp::blocks: {
      if (inode.type != FileType::regular) return reply_to(request, -EINVAL);
      if (request.arg1 > kMaxFileBytes) return reply_to(request, -EFBIG);
      const std::size_t held = inode.blocks.size();
      if (int error = allocate_up_to(inode, request.arg1); error != 0) {
        return reply_to(request, error);
      }
      if (inode.blocks.size() != held) note_changed(request.inode);  // st_blocks
      reply.arg0 = inode.blocks.size();
      reply.arg1 = inode.size;
      if (request.arg0 < inode.blocks.size()) {
        const std::size_t count = std::min<std::size_t>(inode.blocks.size() - request.arg0,
                                                        kMaxPayload / sizeof(BlockId));
        reply.set_extra(std::span(reinterpret_cast<const char*>(inode.blocks.data() + request.arg0),
                                  count * sizeof(BlockId)));
      }
      return reply;
    }
    case FsOp::flush:
      if (int error = publish(inode, request.arg0, request.arg1, now); error != 0) {
        return reply_to(request, error);
      }
      return reply;
    case FsOp::chmod:
      inode.mode = (inode.mode & S_IFMT) | static_cast<std::uint32_t>(request.arg0 & 07777);
      inode.ctime = now;
      return reply;
    case FsOp::chown:
      if (request.arg0 != 0xffffffffu) inode.uid = static_cast<std::uint32_t>(request.arg0);
      if (request.arg1 != 0xffffffffu) inode.gid = static_cast<std::uint32_t>(request.arg1);
      inode.ctime = now;
      return reply;
    case FsOp::utimens:
      if ((request.flags & kPublish) != 0) {
        if (int error = publish(inode, request.arg2, 0, now); error != 0) return reply_to(request, error);
      }
      if (request.arg0 != kTimeOmit) inode.atime = request.arg0;
      if (request.arg1 != kTimeOmit) inode.mtime = request.arg1;
      inode.ctime = now;
      return reply;
    case FsOp::fstat:
      put_stat(reply, stat_record(request.inode, inode));
      remember_attribute_holder(request.inode, request.client);
      return reply;
    default:
      return reply_to(request, -EINVAL);
  }
}

StatRecord FileServer::stat_record(InodeNumber number, const Inode& inode) {
  StatRecord stat;
  stat.inode = number;
  stat.size = inode.size;
  stat.blocks = inode.blocks.size() * (kBlockBytes / 512);
  stat.atime_ns = inode.atime;
  stat.mtime_ns = inode.mtime;
  stat.ctime_ns = inode.ctime;
  stat.mode = inode.mode;
  stat.nlink = inode.nlink;
  stat.uid = inode.uid;
  stat.gid = inode.gid;
  return stat;
}

int FileServer::publish(Inode& inode, std::uint64_t end, std::uint64_t mtime, std::uint64_t now) {
  if (inode.type != FileType::regular) return 0;
  if (end > kMaxFileBytes) return -EFBIG;
  if (end > inode.size) {
    if (int error = allocate_up_to(inode, end); error != 0) return error;
    inode.size = end;
  }
  inode.mtime = mtime != 0 ? mtime : now;
  return 0;
}

void FileServer::drop_link(InodeNumber number) {
  auto found = inodes_.find(number);
  if (found == inodes_.end()) return;
  if (found->second.nlink > 0) --found->second.nlink;
  note_changed(number);
  maybe_free(number);
}

void FileServer::maybe_free(InodeNumber number) {
  auto found = inodes_.find(number);
  if (found == inodes_.end() || found->second.nlink > 0 || found->second.opens > 0) return;
  release_blocks(found->second.blocks);
  release_blocks(found->second.retired);
  inodes_.erase(found);
}

void FileServer::release_blocks(std::vector<BlockId>& blocks) {
  for (BlockId id : blocks) {
    if (!allocator_.release(id)) continue;
    if (replaying_) {
      released_in_replay_.push_back(id);
    } else {
      auto block = cache_.block(id);
      std::memset(block.data(), 0, block.size());
    }
  }
  blocks.clear();
}

int FileServer::allocate_up_to(Inode& inode, std::uint64_t bytes) {
  const std::uint64_t need = blocks_for(bytes);
  const std::size_t before = inode.blocks.size();
  while (inode.blocks.size() < need) {
    auto block = allocator_.allocate();
    if (!block) {
      std::vector<BlockId> added(inode.blocks.begin() + static_cast<std::ptrdiff_t>(before),
                                 inode.blocks.end());
      inode.blocks.resize(before);
      release_blocks(added);
      return -ENOSPC;
    }
    inode.blocks.push_back(*block);
  }
  return 0;
}

int FileServer::resize(Inode& inode, std::uint64_t size, bool keep_cut_blocks) {
  if (size > inode.size) {
    if (int error = allocate_up_to(inode, size); error != 0) return error;
    inode.size = size;
    return 0;
  }
  const std::size_t keep = blocks_for(size);
  if (inode.blocks.size() > keep) {
    std::vector<BlockId> cut(inode.blocks.begin() + static_cast<std::ptrdiff_t>(keep),
                             inode.blocks.end());
    inode.blocks.resize(keep);
    if (keep_cut_blocks) {
      inode.retired.insert(inode.retired.end(), cut.begin(), cut.end());
    } else {
      release_blocks(cut);
    }
  }
  // Bytes past the new end read back as zeros if the file grows again. A replay leaves them: a
  // client may have written there since.
  if (!replaying_ && size % kBlockBytes != 0 && keep > 0) {
    auto block = cache_.block(inode.blocks[keep - 1]);
    std::memset(block.data() + size % kBlockBytes, 0, kBlockBytes - size % kBlockBytes);
  }
  inode.size = size;
  return 0;
}

void FileServer::close_descriptor(std::uint64_t id) {
  auto found = descriptors_.find(id);
  if (found == descriptors_.end()) return;
  const InodeNumber number = found->second.inode;
  descriptors_.erase(found);
  auto inode = inodes_.find(number);
  if (inode == inodes_.end()) return;
  if (inode->second.opens > 0) --inode->second.opens;
  if (inode->second.opens == 0) {
    note_changed(number);  // st_blocks, when blocks taken ahead go back
    release_blocks(inode->second.retired);
    // What clients took ahead of the end while they wrote (Client::fetch_blocks) goes back.
    Inode& file = inode->second;
    const std::size_t keep = blocks_for(file.size);
    if (file.type == FileType::regular && file.blocks.size() > keep) {
      std::vector<BlockId> ahead(file.blocks.begin() + static_cast<std::ptrdiff_t>(keep), file.blocks.end());
      file.blocks.resize(keep);
      release_blocks(ahead);
    }
  }
  maybe_free(number);
}

void FileServer::invalidate(const EntryKey& key, ClientId except, ServerOutputs& out) {
  auto lookers = lookers_.find(key);
  if (lookers == lookers_.end()) return;
  FsMessage message;
  message.op = FsOp::invalidate;
  message.inode = key.first;
  message.set_name(key.second);
  for (ClientId client : lookers->second) {
    if (client == except) continue;
    message.client = client;
    out.send(client, message);
    ++stats_.invalidations;
  }
  lookers_.erase(lookers);
}

std::vector<std::pair<std::string, InodeNumber>> FileServer::entries_of(
    InodeNumber directory) const {
  std::vector<std::pair<std::string, InodeNumber>> out;
  for (auto it = entries_.lower_bound(EntryKey(directory, std::string()));
       it != entries_.end() && it->first.first == directory; ++it) {
    out.emplace_back(it->first.second, it->second.inode);
  }
  return out;
}

}  // namespace flotilla::fs
