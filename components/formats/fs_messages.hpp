// The file fleet's wire format: one FsMessage per RPC (Hare's MKDIR, RMDIR, DIRENT, ADD_MAP, ...),
// carried over a channel as 1..kMaxFsChunks 64-byte Messages.
//
// Decision: a message is a fixed 52-byte header plus a payload of up to kMaxPayload bytes (a name,
// a name and a symlink target, a block list or a stat record). The name fleet's chunking copies a
// whole struct, so a nameless request would still cost two chunks; here the header is written
// field by field into exactly one chunk's payload and only the used payload bytes follow, so the
// frequent nameless calls (READ, CLOSE, FSTAT, ...) take one Message and a 255-byte name six.
// Both ends share one machine's memory, so integers travel in host byte order. Header-only, like
// the other formats here.
//
// Fields by op (requests; `inode` is a directory for the name-carrying ones). Every name-carrying
// request sets flags kDistributed when its directory is distributed, so the server can check that
// the entry belongs to it (entry_server below).
//   mkdir         inode, name, arg0 = mode, arg1 = 1 for a distributed directory -> reply inode
//   rmdir_lock    inode = the directory, at its home server; serialises rmdirs of it.
//                 arg0 = kRemoveAtHome (a directory whose entries all live at its home): the
//                 whole rmdir but its entry in one message (checked as rmdir_mark, then gone as
//                 after rmdir_commit), nothing left locked or marked. arg0 also kRemoveEntry,
//                 arg1 = the parent directory, name = the directory's name in it (flags
//                 kDistributed: the parent is): when this server holds that entry, naming the
//                 directory, it goes too -> reply arg0 = kRemoveEntry when it did, so rmdir is
//                 one message
//   rmdir_mark    inode = the directory, at every server holding its entries: refuses (ENOTEMPTY)
//                 when it holds one, otherwise marks it and holds creates into it back
//   rmdir_commit  inode: the directory is gone here (the home server also frees it and unlocks)
//   rmdir_abort   inode: unmark (the home server also unlocks)
//   dirent        inode, name = the last name seen ("" first) -> reply payload = as many entries
//                 as fit (put_dirent, read with for_each_dirent), in name order; flags kEnd
//                 when no further entry is left here. An entry naming a directory this server
//                 holds carries its attributes (type word kWithStat): a walker's lstat of each
//                 subdirectory is then answered by the listing (the client becomes one of the
//                 name's lookers and the inode's attribute holders, as after a RESOLVE with stat)
//   add_map       inode, name, arg0 = target inode, arg1 = type, flags kReplace (rename) ->
//                 reply arg0 = the inode the entry named before (0: none), flags kLinkDropped
//                 when this server is that inode's home and dropped its link itself. flags
//                 kMoveEntry: a rename whose old entry lives here too, arg2 = its directory, the
//                 old name in the payload after the new one (kSourceDistributed: that directory
//                 is); the old entry must name arg0 (else ENOENT, nothing changed) and goes in
//                 the same step, so the rename is one message
//   rm_map        inode, name, arg0 = expected inode (0: any), flags kDirOk (rmdir's own entry),
//                 kKeepLink (rename: the entry moved, the link stays) -> reply inode = the
//                 unlinked inode, arg1 = type, flags kLinkDropped as for add_map
//   resolve       inode, name, arg0 = kResolveWithStat: the inode's StatRecord in the reply
//                 payload when this server holds it -> reply inode, arg1 = type
//   symlink       inode, name, then the target in the payload -> reply inode
//   readlink      inode -> reply payload = the target
//   open          flags kByInode: inode; else inode = directory and name. arg0 = open flags,
//                 arg1 = mode, arg2 = bytes the client expects to write -> reply inode, arg0 =
//                 descriptor, arg1 = size, arg2 = type; or, when the entry names an inode of
//                 another server, flags kByInode and no descriptor: open it there. An open for
//                 writing of an empty file with no blocks gives it blocks for arg2 bytes (at
//                 most kOpenGrantBytes; one when the cache is short of them), whose ids (u32)
//                 are the reply's payload: a file written as far as expected needs no BLOCKS
//   dup           arg0 = descriptor, arg1 = the holder's offset, arg2 = the new holder (a child):
//                 the descriptor is now shared and its offset lives here
//   lseek         arg0 = descriptor, arg1 = offset, arg2 = whence -> reply arg0 = offset
//   close         arg0 = descriptor; flags kAll: every descriptor and lock of the sender (the
//                 supervisor's notice that a client died is logged as this); flags kPublish:
//                 first what a FLUSH with arg0 = arg2 does (a writer's close is one message)
//   create        arg0 = mode, arg1 = type -> reply inode (unlinked until an add_map names it)
//   destroy       inode: drop one link (the entry was removed at another server)
//   read, write   arg0 = descriptor, arg1 = length -> reply arg0 = offset to use, arg1 = length
//                 (read: clipped to the size), arg2 = size; flags kSoleHolder when no one else
//                 holds the descriptor any more (the offset moves back to the client)
//   trunc         inode, arg0 = size
//   blocks        inode, arg0 = first block index, arg1 = bytes to allocate up to (0: none) ->
//                 reply arg0 = blocks the file has, arg1 = size, payload = block ids (u32)
//   flush         inode, arg0 = the writer's end of file, arg1 = mtime (ns; 0: the server's now)
//   chmod         inode, arg0 = mode;  chown: arg0 = uid, arg1 = gid
//   fstat         inode -> reply payload = StatRecord; the client becomes one of the inode's
//                 attribute holders (so does a resolve with kResolveWithStat that carries them)
//   utimens       inode, arg0 = atime, arg1 = mtime (ns; kTimeOmit leaves one as it is); flags
//                 kPublish: first what a FLUSH with arg0 = arg2 does (the writer's end), in the
//                 same step
// A request sent to a server that does not hold its inode or entry is answered -ESTALE.
// Server to client: reply (request echoed, status 0 or -errno) and invalidate (inode = directory,
// name; flags kAll: forget everything learned from server arg0; flags kAttributes, no name: the
// attributes of `inode` changed). A server sends an invalidation before the reply to the change,
// to every holder but none twice (it forgets them), so a client that drains its ring before each
// cached use never uses a stale lookup or stale attributes.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>

#include "dataplane/hash.hpp"
#include "dataplane/message.hpp"
#include "dataplane/message_chunks.hpp"
#include "dataplane/result.hpp"

namespace flotilla::fs {

using InodeNumber = std::uint64_t;
using ClientId = std::uint32_t;
using ServerIndex = std::uint16_t;

// An inode number names its home server in the high 16 bits; the rest is the server's own count.
inline constexpr unsigned kServerShift = 48;
constexpr ServerIndex home_of(InodeNumber inode) {
  return static_cast<ServerIndex>(inode >> kServerShift);
}
constexpr InodeNumber make_inode(ServerIndex server, std::uint64_t local) {
  return (static_cast<InodeNumber>(server) << kServerShift) | (local & ((1ull << kServerShift) - 1));
}
inline constexpr InodeNumber kRootInode = make_inode(0, 1);

// The server that holds the entry (directory, name): a distributed directory spreads its entries
// by hash(directory, name) % servers; any other keeps them at its home.
ServerIndex entry_server(InodeNumber directory, bool distributed, std::string_view name,
                         std::uint16_t servers);

inline constexpr std::size_t kMaxNameBytes = 255;
inline constexpr std::size_t kMaxTargetBytes = 255;  // a symlink's target
inline constexpr std::size_t kMaxPayload = 512;
inline constexpr std::uint64_t kTimeOmit = ~0ull;
// The most an OPEN for writing of an empty file allocates ahead (its reply lists 16 block ids).
inline constexpr std::uint64_t kOpenGrantBytes = 64 << 10;

enum class FsOp : std::uint8_t {
  none = 0,
  mkdir, rmdir_lock, rmdir_mark, rmdir_commit, rmdir_abort, dirent, add_map, rm_map, resolve,
  symlink, readlink, open, dup, lseek, close, create, destroy, read, write, trunc, blocks, flush,
  chmod, chown, fstat, utimens,
  reply, invalidate,
};
inline constexpr std::uint8_t kLastFsOp = static_cast<std::uint8_t>(FsOp::invalidate);
const char* to_string(FsOp op);

enum class FileType : std::uint8_t { none = 0, regular = 1, directory = 2, symlink = 3 };
inline constexpr std::uint8_t kLastFileType = 3;

// FsMessage::flags
inline constexpr std::uint8_t kDistributed = 1;  // mkdir; in a type word: the directory is spread
inline constexpr std::uint8_t kReplace = 2;      // add_map
inline constexpr std::uint8_t kKeepLink = 2;     // rm_map
inline constexpr std::uint8_t kByInode = 4;      // open
inline constexpr std::uint8_t kEnd = 8;          // dirent reply
inline constexpr std::uint8_t kSoleHolder = 16;  // read/write/lseek reply
inline constexpr std::uint8_t kAll = 32;         // invalidate
inline constexpr std::uint8_t kDirOk = 64;       // rm_map of a directory's entry (rmdir)
inline constexpr std::uint8_t kMoveEntry = 4;          // add_map
inline constexpr std::uint8_t kSourceDistributed = 8;  // add_map with kMoveEntry
inline constexpr std::uint8_t kLinkDropped = 128;  // rm_map reply
inline constexpr std::uint8_t kAttributes = 1;  // invalidate: an inode's attributes, no name
inline constexpr std::uint8_t kPublish = 1;     // utimens, close: publish the writer's end (arg2) too
// Request arguments (arg0)
inline constexpr std::uint64_t kResolveWithStat = 1;  // resolve
inline constexpr std::uint64_t kRemoveAtHome = 1;     // rmdir_lock
inline constexpr std::uint64_t kRemoveEntry = 2;      // rmdir_lock with kRemoveAtHome, and its reply

// A type word (add_map arg1, resolve/dirent reply arg1): FileType in the low byte, kDistributed
// in bit 8; in a dirent record, kWithStat (bit 9) says the entry's attributes follow its name.
constexpr std::uint64_t type_word(FileType type, bool distributed) {
  return static_cast<std::uint64_t>(type) | (distributed ? 0x100u : 0u);
}
constexpr FileType type_of_word(std::uint64_t word) { return static_cast<FileType>(word & 0xff); }
constexpr bool distributed_of_word(std::uint64_t word) { return (word & 0x100u) != 0; }
inline constexpr std::uint64_t kWithStat = 0x200;

struct FsMessage {
  std::uint64_t request = 0;  // the client's request number, echoed in the reply
  InodeNumber inode = 0;
  std::uint64_t arg0 = 0;
  std::uint64_t arg1 = 0;
  std::uint64_t arg2 = 0;
  ClientId client = 0;
  std::int16_t status = 0;  // replies: 0 or -errno
  FsOp op = FsOp::none;
  std::uint8_t flags = 0;
  std::uint16_t name_length = 0;     // the name is payload[0, name_length)
  std::uint16_t payload_length = 0;  // what follows the name is op-specific
  std::array<char, kMaxPayload> payload{};

  std::string_view name() const { return {payload.data(), name_length}; }
  // The bytes after the name: a symlink target, a block list, a stat record.
  std::span<const char> extra() const {
    return {payload.data() + name_length, static_cast<std::size_t>(payload_length - name_length)};
  }
  // False (and nothing changes) when the name or extra bytes do not fit.
  bool set_name(std::string_view name);
  bool set_extra(std::span<const char> bytes);
};

// Header bytes on the wire.
inline constexpr std::size_t kHeaderBytes = 52;

// A name is 1..255 bytes, no '/' or NUL, and not "." or "..".
bool valid_name(std::string_view name);

// The structural check of an FsMessage that came from another process: op in range, lengths,
// names where the op needs them, status in -4095..0, a client id on requests.
bool well_formed(const FsMessage& message);

// Explicit encoding, also used by the state log. encode() returns the bytes written (header plus
// payload); decode() refuses anything well_formed() refuses, and short or inconsistent input.
std::size_t encoded_size(const FsMessage& message);
std::size_t encode(const FsMessage& message, std::span<std::byte> out);
Result<FsMessage> decode(std::span<const std::byte> bytes);

// A reply to `request` with `status` (0 or -errno).
FsMessage reply_to(const FsMessage& request, int status);

struct StatRecord;

// ---- DIRENT's records: inode (8 bytes), type word (2), name length (1), name, and with
// kWithStat the attributes (kDirentStatBytes: a StatRecord without its inode) ----
inline constexpr std::size_t kDirentHeaderBytes = 11;
inline constexpr std::size_t kDirentStatBytes = 56;
// Appends one entry (with its attributes when `stat` is given) to a dirent reply; false (and
// nothing added) when it does not fit.
bool put_dirent(FsMessage& reply, std::string_view name, InodeNumber inode, std::uint64_t type,
                const StatRecord* stat = nullptr);
// Calls visit(name, inode, type word without kWithStat, const StatRecord* or null) for each entry
// of a dirent reply; false when the payload is malformed (a record past the end, a bad name or
// type), after visiting the entries before it.
template <class Visit>
bool for_each_dirent(const FsMessage& reply, Visit&& visit);

// ---- FSTAT's record ----
struct StatRecord {
  InodeNumber inode = 0;
  std::uint64_t size = 0;
  std::uint64_t blocks = 0;  // 512-byte units, as st_blocks
  std::uint64_t atime_ns = 0;
  std::uint64_t mtime_ns = 0;
  std::uint64_t ctime_ns = 0;
  std::uint32_t mode = 0;  // permission bits and S_IFMT
  std::uint32_t nlink = 0;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
};
inline constexpr std::size_t kStatBytes = 64;
static_assert(kStatBytes == sizeof(InodeNumber) + kDirentStatBytes);
void put_stat(FsMessage& reply, const StatRecord& stat);
Result<StatRecord> stat_of(const FsMessage& reply);

// ---- Chunking into 64-byte channel messages ----
inline constexpr MessageKind kFsChunkKind =
    static_cast<MessageKind>(static_cast<std::uint16_t>(MessageKind::user) + 0x50);

using FsChunk = MessageChunk;  // the runtime's chunking (dataplane/message_chunks.hpp)
static_assert(kHeaderBytes == FsChunk::kPayload, "a nameless message is exactly one chunk");

inline constexpr std::size_t kMaxFsChunks = chunks_for(kHeaderBytes + kMaxPayload);

// Splits `message` into out[0..n) and returns n.
std::size_t encode_chunks(const FsMessage& message, std::uint16_t sequence,
                          std::array<Message, kMaxFsChunks>& out);

// Reassembles one channel's chunks, which arrive in order (channels are FIFO).
class FsAssembler {
 public:
  // An error for a chunk that does not fit (wrong kind, index, count or sequence) or a completed
  // message that fails decode(); the partial message is dropped and the error counted. nullopt
  // while the message is incomplete.
  Result<std::optional<FsMessage>> push(const Message& chunk);
  std::uint64_t rejected() const { return chunks_.rejected(); }
  void reset() { chunks_.reset(); }

 private:
  ChunkReassembler<kMaxFsChunks> chunks_;
};

// ---- Definitions ----

namespace fs_detail {

inline Error malformed(const char* context) { return Error{Errc::invalid_argument, 0, context}; }

template <class T>
inline void put(std::span<std::byte> out, std::size_t& at, T value) {
  std::memcpy(out.data() + at, &value, sizeof(T));
  at += sizeof(T);
}

template <class T>
inline T get(std::span<const std::byte> in, std::size_t& at) {
  T value;
  std::memcpy(&value, in.data() + at, sizeof(T));
  at += sizeof(T);
  return value;
}

inline bool is_request(FsOp op) { return op != FsOp::reply && op != FsOp::invalidate; }

inline bool carries_name(const FsMessage& message) {
  switch (message.op) {
    case FsOp::mkdir:
    case FsOp::add_map:
    case FsOp::rm_map:
    case FsOp::resolve:
    case FsOp::symlink:
      return true;
    case FsOp::open:
      return (message.flags & kByInode) == 0;
    case FsOp::rmdir_lock:
      return (message.arg0 & kRemoveEntry) != 0;
    case FsOp::invalidate:
      return (message.flags & (kAll | kAttributes)) == 0;
    default:
      return false;
  }
}

}  // namespace fs_detail


inline ServerIndex entry_server(InodeNumber directory, bool distributed, std::string_view name,
                                std::uint16_t servers) {
  if (!distributed || servers <= 1) return home_of(directory);
  std::uint64_t hash = 0xcbf29ce484222325ull;  // FNV-1a over the name, then mixed with the directory
  for (char c : name) hash = (hash ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return static_cast<ServerIndex>(mix64(directory ^ mix64(hash)) % servers);
}

inline const char* to_string(FsOp op) {
  static constexpr const char* kNames[] = {
      "none",  "mkdir", "rmdir_lock", "rmdir_mark", "rmdir_commit", "rmdir_abort", "dirent",
      "add_map", "rm_map", "resolve", "symlink", "readlink", "open", "dup", "lseek", "close",
      "create", "destroy", "read", "write", "trunc", "blocks", "flush", "chmod", "chown", "fstat",
      "utimens", "reply", "invalidate"};
  static_assert(std::size(kNames) == kLastFsOp + 1);
  const auto index = static_cast<std::size_t>(op);
  return index <= kLastFsOp ? kNames[index] : "unknown";
}

inline bool FsMessage::set_name(std::string_view text) {
  if (text.size() > kMaxNameBytes || text.size() > payload.size()) return false;
  std::memcpy(payload.data(), text.data(), text.size());
  name_length = static_cast<std::uint16_t>(text.size());
  payload_length = name_length;
  return true;
}

inline bool FsMessage::set_extra(std::span<const char> bytes) {
  if (bytes.size() > payload.size() - name_length) return false;
  std::memcpy(payload.data() + name_length, bytes.data(), bytes.size());
  payload_length = static_cast<std::uint16_t>(name_length + bytes.size());
  return true;
}

inline bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  if (name == "." || name == "..") return false;
  return name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

inline bool well_formed(const FsMessage& message) {
  const auto op = static_cast<std::uint8_t>(message.op);
  if (op == 0 || op > kLastFsOp) return false;
  if (message.name_length > message.payload_length || message.payload_length > kMaxPayload) {
    return false;
  }
  if (message.status > 0 || message.status < -4095) return false;
  if (fs_detail::is_request(message.op)) {
    if (message.client == 0 || message.status != 0) return false;
  }
  if (fs_detail::carries_name(message)) {
    if (!valid_name(message.name())) return false;
  } else if (message.op != FsOp::reply && message.op != FsOp::dirent && message.name_length != 0) {
    return false;
  }
  if (message.op == FsOp::dirent && message.name_length != 0 && !valid_name(message.name())) {
    return false;
  }
  if (message.op == FsOp::rmdir_lock && (message.arg0 & kRemoveEntry) != 0 &&
      (message.arg0 != (kRemoveAtHome | kRemoveEntry) || message.arg1 == 0)) {
    return false;
  }
  if (message.op == FsOp::symlink) {
    const auto target = message.extra();
    if (target.empty() || target.size() > kMaxTargetBytes) return false;
    if (std::find(target.begin(), target.end(), '\0') != target.end()) return false;
  }
  if (message.op == FsOp::add_map) {
    const FileType type = type_of_word(message.arg1);
    if (type == FileType::none || static_cast<std::uint8_t>(type) > kLastFileType) return false;
    if ((message.arg1 & ~type_word(FileType::none, true) & ~std::uint64_t{0xff}) != 0) return false;
    if (message.arg0 == 0) return false;
    const auto source = message.extra();
    if ((message.flags & kMoveEntry) != 0) {
      if (message.arg2 == 0 || !valid_name(std::string_view(source.data(), source.size()))) return false;
    } else if (!source.empty() || (message.flags & kSourceDistributed) != 0) {
      return false;
    }
  }
  if (message.op == FsOp::create) {
    const FileType type = type_of_word(message.arg1);
    if (type == FileType::none || static_cast<std::uint8_t>(type) > kLastFileType) return false;
  }
  return true;
}

inline std::size_t encoded_size(const FsMessage& message) {
  return kHeaderBytes + std::min<std::size_t>(message.payload_length, kMaxPayload);
}

inline std::size_t encode(const FsMessage& message, std::span<std::byte> out) {
  const std::size_t size = encoded_size(message);
  if (out.size() < size) return 0;
  std::size_t at = 0;
  fs_detail::put(out, at, message.request);
  fs_detail::put(out, at, message.inode);
  fs_detail::put(out, at, message.arg0);
  fs_detail::put(out, at, message.arg1);
  fs_detail::put(out, at, message.arg2);
  fs_detail::put(out, at, message.client);
  fs_detail::put(out, at, message.status);
  fs_detail::put(out, at, static_cast<std::uint8_t>(message.op));
  fs_detail::put(out, at, message.flags);
  fs_detail::put(out, at, message.name_length);
  fs_detail::put(out, at, message.payload_length);
  std::memcpy(out.data() + at, message.payload.data(), size - kHeaderBytes);
  return size;
}

inline Result<FsMessage> decode(std::span<const std::byte> bytes) {
  if (bytes.size() < kHeaderBytes) return fs_detail::malformed("fs message shorter than its header");
  FsMessage message;
  std::size_t at = 0;
  message.request = fs_detail::get<std::uint64_t>(bytes, at);
  message.inode = fs_detail::get<std::uint64_t>(bytes, at);
  message.arg0 = fs_detail::get<std::uint64_t>(bytes, at);
  message.arg1 = fs_detail::get<std::uint64_t>(bytes, at);
  message.arg2 = fs_detail::get<std::uint64_t>(bytes, at);
  message.client = fs_detail::get<std::uint32_t>(bytes, at);
  message.status = fs_detail::get<std::int16_t>(bytes, at);
  message.op = static_cast<FsOp>(fs_detail::get<std::uint8_t>(bytes, at));
  message.flags = fs_detail::get<std::uint8_t>(bytes, at);
  message.name_length = fs_detail::get<std::uint16_t>(bytes, at);
  message.payload_length = fs_detail::get<std::uint16_t>(bytes, at);
  if (message.payload_length > kMaxPayload) return fs_detail::malformed("fs message payload too long");
  if (bytes.size() - kHeaderBytes < message.payload_length) {
    return fs_detail::malformed("fs message payload truncated");
  }
  std::memcpy(message.payload.data(), bytes.data() + kHeaderBytes, message.payload_length);
  if (!well_formed(message)) return fs_detail::malformed("fs message malformed");
  return message;
}

inline FsMessage reply_to(const FsMessage& request, int status) {
  FsMessage reply;
  reply.op = FsOp::reply;
  reply.request = request.request;
  reply.client = request.client;
  reply.inode = request.inode;
  reply.status = static_cast<std::int16_t>(status);
  return reply;
}

namespace fs_detail {

// A StatRecord but its inode, as FSTAT's record and a dirent record with kWithStat carry it.
inline void put_attributes(std::span<std::byte> out, std::size_t& at, const StatRecord& stat) {
  put(out, at, stat.size);
  put(out, at, stat.blocks);
  put(out, at, stat.atime_ns);
  put(out, at, stat.mtime_ns);
  put(out, at, stat.ctime_ns);
  put(out, at, stat.mode);
  put(out, at, stat.nlink);
  put(out, at, stat.uid);
  put(out, at, stat.gid);
}

inline void get_attributes(std::span<const std::byte> in, std::size_t& at, StatRecord& stat) {
  stat.size = get<std::uint64_t>(in, at);
  stat.blocks = get<std::uint64_t>(in, at);
  stat.atime_ns = get<std::uint64_t>(in, at);
  stat.mtime_ns = get<std::uint64_t>(in, at);
  stat.ctime_ns = get<std::uint64_t>(in, at);
  stat.mode = get<std::uint32_t>(in, at);
  stat.nlink = get<std::uint32_t>(in, at);
  stat.uid = get<std::uint32_t>(in, at);
  stat.gid = get<std::uint32_t>(in, at);
}

}  // namespace fs_detail

inline bool put_dirent(FsMessage& reply, std::string_view name, InodeNumber inode,
                       std::uint64_t type, const StatRecord* stat) {
  const std::size_t need = kDirentHeaderBytes + name.size() + (stat != nullptr ? kDirentStatBytes : 0);
  if (name.size() > kMaxNameBytes || reply.payload_length + need > kMaxPayload) return false;
  auto out = std::as_writable_bytes(std::span(reply.payload));
  std::size_t at = reply.payload_length;
  fs_detail::put(out, at, inode);
  fs_detail::put(out, at, static_cast<std::uint16_t>((type & ~kWithStat) | (stat != nullptr ? kWithStat : 0)));
  fs_detail::put(out, at, static_cast<std::uint8_t>(name.size()));
  std::memcpy(out.data() + at, name.data(), name.size());
  at += name.size();
  if (stat != nullptr) fs_detail::put_attributes(out, at, *stat);
  reply.payload_length = static_cast<std::uint16_t>(at);
  return true;
}

template <class Visit>
bool for_each_dirent(const FsMessage& reply, Visit&& visit) {
  if (reply.name_length != 0 || reply.payload_length > kMaxPayload) return false;
  const auto in = std::as_bytes(std::span(reply.payload.data(), reply.payload_length));
  std::size_t at = 0;
  while (at < in.size()) {
    if (in.size() - at < kDirentHeaderBytes) return false;
    const auto inode = fs_detail::get<std::uint64_t>(in, at);
    const auto type = fs_detail::get<std::uint16_t>(in, at);
    const auto length = fs_detail::get<std::uint8_t>(in, at);
    if (in.size() - at < length) return false;
    const std::string_view name(reply.payload.data() + at, length);
    at += length;
    const FileType kind = type_of_word(type);
    if (!valid_name(name) || inode == 0 || kind == FileType::none ||
        static_cast<std::uint8_t>(kind) > kLastFileType) {
      return false;
    }
    std::optional<StatRecord> stat;
    if ((type & kWithStat) != 0) {
      if (in.size() - at < kDirentStatBytes) return false;
      stat.emplace();
      stat->inode = inode;
      fs_detail::get_attributes(in, at, *stat);
    }
    visit(name, inode, static_cast<std::uint64_t>(type & ~kWithStat), stat ? &*stat : nullptr);
  }
  return true;
}

inline void put_stat(FsMessage& reply, const StatRecord& stat) {
  std::array<std::byte, kStatBytes> bytes{};
  std::size_t at = 0;
  const std::span<std::byte> out(bytes);
  fs_detail::put(out, at, stat.inode);
  fs_detail::put_attributes(out, at, stat);
  reply.name_length = 0;
  std::memcpy(reply.payload.data(), bytes.data(), bytes.size());
  reply.payload_length = kStatBytes;
}

inline Result<StatRecord> stat_of(const FsMessage& reply) {
  if (reply.payload_length != kStatBytes || reply.name_length != 0) {
    return fs_detail::malformed("fstat reply without a stat record");
  }
  const auto in = std::as_bytes(std::span<const char>(reply.payload.data(), kStatBytes));
  StatRecord stat;
  std::size_t at = 0;
  stat.inode = fs_detail::get<std::uint64_t>(in, at);
  fs_detail::get_attributes(in, at, stat);
  return stat;
}

inline std::size_t encode_chunks(const FsMessage& message, std::uint16_t sequence,
                                 std::array<Message, kMaxFsChunks>& out) {
  std::array<std::byte, kMaxFsChunks * FsChunk::kPayload> bytes{};
  const std::size_t used = encode(message, bytes);
  return split_into_chunks(kFsChunkKind, sequence, std::span<const std::byte>(bytes.data(), used), out);
}

inline Result<std::optional<FsMessage>> FsAssembler::push(const Message& raw) {
  switch (chunks_.push(kFsChunkKind, raw)) {
    case ChunkReassembler<kMaxFsChunks>::Outcome::rejected: return fs_detail::malformed("fs chunk out of place");
    case ChunkReassembler<kMaxFsChunks>::Outcome::incomplete: return std::optional<FsMessage>{};
    case ChunkReassembler<kMaxFsChunks>::Outcome::complete: break;
  }
  const std::span<const std::byte> record = chunks_.record();
  auto message = decode(record);
  if (!message) {
    chunks_.reject_record();
    return message.error();
  }
  // A message must use every chunk it claims: trailing chunks beyond its length are malformed.
  if (chunks_for(encoded_size(*message)) != chunks_for(record.size())) {
    chunks_.reject_record();
    return fs_detail::malformed("fs message chunk count disagrees with its length");
  }
  return std::optional<FsMessage>(std::move(*message));
}

}  // namespace flotilla::fs
