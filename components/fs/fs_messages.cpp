#include "components/fs/fs_messages.hpp"

#include <algorithm>
#include <cstring>

namespace flotilla::fs {
namespace {

Error malformed(const char* context) { return Error{Errc::invalid_argument, 0, context}; }

template <class T>
void put(std::span<std::byte> out, std::size_t& at, T value) {
  std::memcpy(out.data() + at, &value, sizeof(T));
  at += sizeof(T);
}

template <class T>
T get(std::span<const std::byte> in, std::size_t& at) {
  T value;
  std::memcpy(&value, in.data() + at, sizeof(T));
  at += sizeof(T);
  return value;
}

bool is_request(FsOp op) { return op != FsOp::reply && op != FsOp::invalidate; }

bool carries_name(const FsMessage& message) {
  switch (message.op) {
    case FsOp::mkdir:
    case FsOp::add_map:
    case FsOp::rm_map:
    case FsOp::resolve:
    case FsOp::symlink:
      return true;
    case FsOp::open:
      return (message.flags & kByInode) == 0;
    case FsOp::invalidate:
      return (message.flags & kAll) == 0;
    default:
      return false;
  }
}

}  // namespace

const char* to_string(FsOp op) {
  static constexpr const char* kNames[] = {
      "none",  "mkdir", "rmdir_lock", "rmdir_mark", "rmdir_commit", "rmdir_abort", "dirent",
      "add_map", "rm_map", "resolve", "symlink", "readlink", "open", "dup", "lseek", "close",
      "create", "destroy", "read", "write", "trunc", "blocks", "flush", "chmod", "chown", "fstat",
      "utimens", "reply", "invalidate"};
  static_assert(std::size(kNames) == kLastFsOp + 1);
  const auto index = static_cast<std::size_t>(op);
  return index <= kLastFsOp ? kNames[index] : "unknown";
}

bool FsMessage::set_name(std::string_view text) {
  if (text.size() > kMaxNameBytes || text.size() > payload.size()) return false;
  std::memcpy(payload.data(), text.data(), text.size());
  name_length = static_cast<std::uint16_t>(text.size());
  payload_length = name_length;
  return true;
}

bool FsMessage::set_extra(std::span<const char> bytes) {
  if (bytes.size() > payload.size() - name_length) return false;
  std::memcpy(payload.data() + name_length, bytes.data(), bytes.size());
  payload_length = static_cast<std::uint16_t>(name_length + bytes.size());
  return true;
}

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  if (name == "." || name == "..") return false;
  return name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

bool well_formed(const FsMessage& message) {
  const auto op = static_cast<std::uint8_t>(message.op);
  if (op == 0 || op > kLastFsOp) return false;
  if (message.name_length > message.payload_length || message.payload_length > kMaxPayload) {
    return false;
  }
  if (message.status > 0 || message.status < -4095) return false;
  if (is_request(message.op)) {
    if (message.client == 0 || message.status != 0) return false;
  }
  if (carries_name(message)) {
    if (!valid_name(message.name())) return false;
  } else if (message.op != FsOp::reply && message.op != FsOp::dirent && message.name_length != 0) {
    return false;
  }
  if (message.op == FsOp::dirent && message.name_length != 0 && !valid_name(message.name())) {
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
    if (message.arg0 == 0) return false;
  }
  if (message.op == FsOp::create) {
    const FileType type = type_of_word(message.arg1);
    if (type == FileType::none || static_cast<std::uint8_t>(type) > kLastFileType) return false;
  }
  return true;
}

std::size_t encoded_size(const FsMessage& message) {
  return kHeaderBytes + std::min<std::size_t>(message.payload_length, kMaxPayload);
}

std::size_t encode(const FsMessage& message, std::span<std::byte> out) {
  const std::size_t size = encoded_size(message);
  if (out.size() < size) return 0;
  std::size_t at = 0;
  put(out, at, message.request);
  put(out, at, message.inode);
  put(out, at, message.arg0);
  put(out, at, message.arg1);
  put(out, at, message.arg2);
  put(out, at, message.client);
  put(out, at, message.status);
  put(out, at, static_cast<std::uint8_t>(message.op));
  put(out, at, message.flags);
  put(out, at, message.name_length);
  put(out, at, message.payload_length);
  std::memcpy(out.data() + at, message.payload.data(), size - kHeaderBytes);
  return size;
}

Result<FsMessage> decode(std::span<const std::byte> bytes) {
  if (bytes.size() < kHeaderBytes) return malformed("fs message shorter than its header");
  FsMessage message;
  std::size_t at = 0;
  message.request = get<std::uint64_t>(bytes, at);
  message.inode = get<std::uint64_t>(bytes, at);
  message.arg0 = get<std::uint64_t>(bytes, at);
  message.arg1 = get<std::uint64_t>(bytes, at);
  message.arg2 = get<std::uint64_t>(bytes, at);
  message.client = get<std::uint32_t>(bytes, at);
  message.status = get<std::int16_t>(bytes, at);
  message.op = static_cast<FsOp>(get<std::uint8_t>(bytes, at));
  message.flags = get<std::uint8_t>(bytes, at);
  message.name_length = get<std::uint16_t>(bytes, at);
  message.payload_length = get<std::uint16_t>(bytes, at);
  if (message.payload_length > kMaxPayload) return malformed("fs message payload too long");
  if (bytes.size() - kHeaderBytes < message.payload_length) {
    return malformed("fs message payload truncated");
  }
  std::memcpy(message.payload.data(), bytes.data() + kHeaderBytes, message.payload_length);
  if (!well_formed(message)) return malformed("fs message malformed");
  return message;
}

FsMessage reply_to(const FsMessage& request, int status) {
  FsMessage reply;
  reply.op = FsOp::reply;
  reply.request = request.request;
  reply.client = request.client;
  reply.inode = request.inode;
  reply.status = static_cast<std::int16_t>(status);
  return reply;
}

void put_stat(FsMessage& reply, const StatRecord& stat) {
  std::array<std::byte, kStatBytes> bytes{};
  std::size_t at = 0;
  const std::span<std::byte> out(bytes);
  put(out, at, stat.inode);
  put(out, at, stat.size);
  put(out, at, stat.blocks);
  put(out, at, stat.atime_ns);
  put(out, at, stat.mtime_ns);
  put(out, at, stat.ctime_ns);
  put(out, at, stat.mode);
  put(out, at, stat.nlink);
  put(out, at, stat.uid);
  put(out, at, stat.gid);
  reply.name_length = 0;
  std::memcpy(reply.payload.data(), bytes.data(), bytes.size());
  reply.payload_length = kStatBytes;
}

Result<StatRecord> stat_of(const FsMessage& reply) {
  if (reply.payload_length != kStatBytes || reply.name_length != 0) {
    return malformed("fstat reply without a stat record");
  }
  const auto in = std::as_bytes(std::span<const char>(reply.payload.data(), kStatBytes));
  StatRecord stat;
  std::size_t at = 0;
  stat.inode = get<std::uint64_t>(in, at);
  stat.size = get<std::uint64_t>(in, at);
  stat.blocks = get<std::uint64_t>(in, at);
  stat.atime_ns = get<std::uint64_t>(in, at);
  stat.mtime_ns = get<std::uint64_t>(in, at);
  stat.ctime_ns = get<std::uint64_t>(in, at);
  stat.mode = get<std::uint32_t>(in, at);
  stat.nlink = get<std::uint32_t>(in, at);
  stat.uid = get<std::uint32_t>(in, at);
  stat.gid = get<std::uint32_t>(in, at);
  return stat;
}

std::size_t encode_chunks(const FsMessage& message, std::uint16_t sequence,
                          std::array<Message, kMaxFsChunks>& out) {
  std::array<std::byte, kMaxFsChunks * FsChunk::kPayload> bytes{};
  const std::size_t used = encode(message, bytes);
  const std::size_t count = (used + FsChunk::kPayload - 1) / FsChunk::kPayload;
  for (std::size_t i = 0; i < count; ++i) {
    FsChunk chunk{};
    chunk.sequence = sequence;
    chunk.index = static_cast<std::uint8_t>(i);
    chunk.count = static_cast<std::uint8_t>(count);
    std::memcpy(chunk.bytes.data(), bytes.data() + i * FsChunk::kPayload, FsChunk::kPayload);
    out[i] = Message::make(kFsChunkKind, chunk);
  }
  return count;
}

Result<std::optional<FsMessage>> FsAssembler::push(const Message& raw) {
  const FsChunk chunk = raw.read<FsChunk>();
  const bool starts = chunk.index == 0 && chunk.count >= 1 && chunk.count <= kMaxFsChunks;
  const bool continues = count_ != 0 && chunk.index == next_index_ && chunk.count == count_ &&
                         chunk.sequence == sequence_;
  if (raw.kind != kFsChunkKind || !(starts || continues)) {
    ++rejected_;
    count_ = 0;
    return malformed("fs chunk out of place");
  }
  if (starts) {
    if (count_ != 0) ++rejected_;  // the previous message never completed
    sequence_ = chunk.sequence;
    count_ = chunk.count;
  }
  std::memcpy(bytes_.data() + chunk.index * FsChunk::kPayload, chunk.bytes.data(),
              FsChunk::kPayload);
  next_index_ = static_cast<std::uint8_t>(chunk.index + 1);
  if (next_index_ < count_) return std::optional<FsMessage>{};
  const std::size_t total = static_cast<std::size_t>(count_) * FsChunk::kPayload;
  count_ = 0;
  auto message = decode(std::span<const std::byte>(bytes_.data(), total));
  if (!message) {
    ++rejected_;
    return message.error();
  }
  // A message must use every chunk it claims: trailing chunks beyond its length are malformed.
  if ((encoded_size(*message) + FsChunk::kPayload - 1) / FsChunk::kPayload != total / FsChunk::kPayload) {
    ++rejected_;
    return malformed("fs message chunk count disagrees with its length");
  }
  return std::optional<FsMessage>(std::move(*message));
}

}  // namespace flotilla::fs
