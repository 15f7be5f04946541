#include "components/fs/state_log.hpp"

#include <algorithm>
#include <cstring>

#include "dataplane/hash.hpp"

namespace flotilla::fs {
namespace {

struct RegionHeader {
  std::uint64_t magic;
  std::uint32_t layout;
  std::uint32_t reserved;
  std::uint64_t identity;
  std::uint64_t slot_bytes;
  std::uint64_t log_bytes;
  std::uint64_t spare[3];
};
static_assert(sizeof(RegionHeader) == StateLog::kRegionHeaderBytes);

struct SlotHeader {
  std::uint64_t magic;
  std::uint64_t generation;
  std::uint64_t next_lsn;
  std::uint64_t bytes;
  std::uint64_t checksum;  // over the fields above and the image; written last
  std::uint64_t reserved;
};
static_assert(sizeof(SlotHeader) == StateLog::kSlotHeaderBytes);

struct RecordHeader {
  std::uint64_t lsn;
  std::uint32_t length;
  std::uint32_t reserved;
  std::uint64_t checksum;
};
static_assert(sizeof(RecordHeader) == StateLog::kRecordHeaderBytes);

constexpr std::uint64_t kSlotMagic = 0x544e494f504b4843ull;  // "CHKPOINT"

std::size_t round8(std::size_t n) { return (n + 7) & ~std::size_t{7}; }

template <class T>
T load(const std::byte* at) {
  T value;
  std::memcpy(&value, at, sizeof(T));
  return value;
}

template <class T>
void store(std::byte* at, const T& value) {
  std::memcpy(at, &value, sizeof(T));
}

std::uint64_t slot_checksum(const SlotHeader& header, std::span<const std::byte> image) {
  std::uint64_t sum = mix64(header.magic ^ mix64(header.generation));
  sum = mix64(sum ^ header.next_lsn);
  sum = mix64(sum ^ header.bytes);
  return checksum64(image, sum);
}

std::uint64_t record_checksum(std::uint64_t lsn, std::uint32_t length,
                              std::span<const std::byte> body) {
  return checksum64(body, mix64(lsn ^ mix64(length + 0x9e3779b97f4a7c15ull)));
}

}  // namespace

std::uint64_t checksum64(std::span<const std::byte> bytes, std::uint64_t seed) {
  std::uint64_t sum = mix64(seed + bytes.size());
  std::size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) sum = mix64(sum ^ load<std::uint64_t>(bytes.data() + i));
  std::uint64_t tail = 0;
  std::memcpy(&tail, bytes.data() + i, bytes.size() - i);
  return mix64(sum ^ tail ^ 0xa5a5a5a5a5a5a5a5ull);
}

Result<StateLog> StateLog::attach(std::span<std::byte> region, std::uint64_t identity) {
  if (reinterpret_cast<std::uintptr_t>(region.data()) % 8 != 0) {
    return Error{Errc::invalid_argument, 0, "fs state region not 8-byte aligned"};
  }
  if (region.size() < 16 * 1024) {
    return Error{Errc::invalid_argument, 0, "fs state region too small"};
  }
  StateLog log;
  log.region_ = region;
  const std::size_t usable = (region.size() - kRegionHeaderBytes) & ~std::size_t{7};
  const std::size_t slot = round8(usable * 3 / 8) - 8;
  const std::size_t log_bytes = (usable - 2 * slot) & ~std::size_t{7};

  const RegionHeader header = load<RegionHeader>(region.data());
  const bool valid = header.magic == kStateMagic && header.layout == kStateLayout &&
                     header.identity == identity && header.slot_bytes == slot &&
                     header.log_bytes == log_bytes;
  log.slot_bytes_ = slot;
  log.log_bytes_ = log_bytes;
  if (valid) {
    log.current_slot_ = log.newest_valid_slot();
    if (log.current_slot_ >= 0) {
      const SlotHeader chosen = load<SlotHeader>(log.slot(log.current_slot_));
      log.generation_ = chosen.generation;
      log.next_lsn_ = chosen.next_lsn;
      return log;
    }
  }
  // Not ours, torn while formatting, or no checkpoint ever completed: start empty. The magic is
  // cleared first and written last, so a crash in between is formatted again.
  RegionHeader fresh{};
  store(region.data(), fresh);
  std::memset(log.slot(0), 0, kSlotHeaderBytes);
  std::memset(log.slot(1), 0, kSlotHeaderBytes);
  std::memset(region.data() + kRegionHeaderBytes + 2 * slot, 0,
              std::min<std::size_t>(log_bytes, kRecordHeaderBytes));
  fresh.magic = kStateMagic;
  fresh.layout = kStateLayout;
  fresh.identity = identity;
  fresh.slot_bytes = slot;
  fresh.log_bytes = log_bytes;
  store(region.data(), fresh);
  log.fresh_ = true;
  return log;
}

std::byte* StateLog::slot(int index) const {
  return region_.data() + kRegionHeaderBytes + static_cast<std::size_t>(index) * slot_bytes_;
}

int StateLog::newest_valid_slot() const {
  int best = -1;
  std::uint64_t best_generation = 0;
  for (int i = 0; i < 2; ++i) {
    const SlotHeader header = load<SlotHeader>(slot(i));
    if (header.magic != kSlotMagic || header.bytes > slot_capacity()) continue;
    const std::span<const std::byte> image(slot(i) + kSlotHeaderBytes, header.bytes);
    if (slot_checksum(header, image) != header.checksum) continue;
    if (best < 0 || header.generation > best_generation) {
      best = i;
      best_generation = header.generation;
    }
  }
  return best;
}

std::span<const std::byte> StateLog::checkpoint() const {
  if (current_slot_ < 0) return {};
  const SlotHeader header = load<SlotHeader>(slot(current_slot_));
  return {slot(current_slot_) + kSlotHeaderBytes, header.bytes};
}

Result<std::size_t> StateLog::replay(
    const std::function<Status(std::span<const std::byte>)>& apply) {
  std::byte* const log = region_.data() + kRegionHeaderBytes + 2 * slot_bytes_;
  std::size_t offset = 0;
  std::size_t count = 0;
  while (log_bytes_ - offset >= kRecordHeaderBytes) {
    const RecordHeader header = load<RecordHeader>(log + offset);
    if (header.lsn != next_lsn_) break;
    if (header.length > log_bytes_ - offset - kRecordHeaderBytes) break;
    const std::span<const std::byte> body(log + offset + kRecordHeaderBytes, header.length);
    if (record_checksum(header.lsn, header.length, body) != header.checksum) break;
    auto applied = apply(body);
    if (!applied) return applied.error();
    ++count;
    ++next_lsn_;
    offset += kRecordHeaderBytes + round8(header.length);
  }
  log_offset_ = offset;
  return count;
}

Status StateLog::append(std::span<const std::byte> body) {
  const std::size_t need = kRecordHeaderBytes + round8(body.size());
  if (body.size() > 0xffffffffu || log_bytes_ - log_offset_ < need) {
    return Error{Errc::exhausted, 0, "fs state log full"};
  }
  std::byte* const at = region_.data() + kRegionHeaderBytes + 2 * slot_bytes_ + log_offset_;
  std::memcpy(at + kRecordHeaderBytes, body.data(), body.size());
  RecordHeader header{};
  header.lsn = next_lsn_;
  header.length = static_cast<std::uint32_t>(body.size());
  header.checksum = record_checksum(header.lsn, header.length, body);
  store(at, header);
  // The record after this one must not look valid: clear the next header's lsn.
  if (log_bytes_ - log_offset_ - need >= sizeof(std::uint64_t)) {
    store(at + need, std::uint64_t{0});
  }
  log_offset_ += need;
  ++next_lsn_;
  return {};
}

Status StateLog::write_checkpoint(std::span<const std::byte> image) {
  if (image.size() > slot_capacity()) return Error{Errc::exhausted, 0, "fs checkpoint too big"};
  const int target = current_slot_ == 0 ? 1 : 0;
  std::byte* const at = slot(target);
  store(at, SlotHeader{});  // invalid while the image is written
  std::memcpy(at + kSlotHeaderBytes, image.data(), image.size());
  SlotHeader header{};
  header.magic = kSlotMagic;
  header.generation = generation_ + 1;
  header.next_lsn = next_lsn_;
  header.bytes = image.size();
  header.checksum = slot_checksum(header, image);
  store(at, header);
  current_slot_ = target;
  generation_ = header.generation;
  log_offset_ = 0;
  return {};
}

}  // namespace flotilla::fs
