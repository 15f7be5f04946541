// The memwire port: two stacks' pools exchanging frames through a shared file, including a side
// killed mid-stream, a full ring, and garbage written into the shared file by a third party.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "dataplane/buffer_pool.hpp"
#include "dataplane/hash.hpp"
#include "drivers/memwire/memwire_port.hpp"

namespace flotilla::drivers {
namespace {

constexpr ComponentId kOwnerA = 11;
constexpr ComponentId kOwnerB = 22;
constexpr std::uint32_t kPoolBuffers = 2048;
using Side = MemwireOptions::Side;

// A frame that proves its own contents: (stream, seq) at the front, a length chosen from them in
// 60..1514, and every following byte derived from them.
std::uint16_t frame_length(std::uint32_t stream, std::uint64_t seq) {
  return static_cast<std::uint16_t>(60 + mix64(seq * 31 + stream) % (1514 - 60 + 1));
}
std::byte frame_byte(std::uint32_t stream, std::uint64_t seq, std::size_t at) {
  return static_cast<std::byte>(mix64((seq << 16) ^ (std::uint64_t{stream} << 56) ^ (at / 8)) >>
                                (8 * (at % 8)));
}
void fill_frame(std::span<std::byte> bytes, std::uint32_t stream, std::uint64_t seq) {
  std::memcpy(bytes.data(), &stream, 4);
  std::memcpy(bytes.data() + 4, &seq, 8);
  for (std::size_t at = 12; at < bytes.size(); ++at) bytes[at] = frame_byte(stream, seq, at);
}
// The frame's (stream, seq) when its length and every byte agree with them.
std::optional<std::pair<std::uint32_t, std::uint64_t>> check_frame(std::span<const std::byte> bytes) {
  if (bytes.size() < 60) return std::nullopt;
  std::uint32_t stream = 0;
  std::uint64_t seq = 0;
  std::memcpy(&stream, bytes.data(), 4);
  std::memcpy(&seq, bytes.data() + 4, 8);
  if (bytes.size() != frame_length(stream, seq)) return std::nullopt;
  for (std::size_t at = 12; at < bytes.size(); ++at) {
    if (bytes[at] != frame_byte(stream, seq, at)) return std::nullopt;
  }
  return std::pair{stream, seq};
}

// One stack's end of the wire: its pool, its port, and its streams' progress.
struct Station {
  BufferPool pool;
  ComponentId owner;
  std::unique_ptr<MemwirePort> port;
  std::uint32_t stream;
  std::uint64_t next_send = 0;
  std::uint64_t next_expected = 0;  // of the peer's stream
  std::uint64_t bad = 0;

  // Sends up to `burst` frames of our stream (stopping at `limit`); returns how many went.
  std::size_t send(std::size_t burst, std::uint64_t limit) {
    std::array<BufferHandle, 64> handles{};
    const std::size_t want = std::min<std::uint64_t>({burst, handles.size(), limit - next_send});
    const std::size_t got = pool.alloc_burst(owner, std::span(handles).first(want));
    for (std::size_t i = 0; i < got; ++i) {
      handles[i].length = frame_length(stream, next_send + i);
      fill_frame(pool.bytes(owner, handles[i]).value(), stream, next_send + i);
    }
    const std::size_t sent = port->transmit_burst(std::span(handles).first(got));
    for (std::size_t i = sent; i < got; ++i) EXPECT_TRUE(pool.free(owner, handles[i]).ok());
    next_send += sent;
    return sent;
  }

  // Receives what is waiting, checks each frame is the next of `peer_stream`, frees them.
  std::size_t receive(std::uint32_t peer_stream) {
    std::array<BufferHandle, 64> handles{};
    const std::size_t got = port->receive_burst(handles);
    for (std::size_t i = 0; i < got; ++i) {
      auto bytes = pool.bytes(owner, handles[i]);
      EXPECT_TRUE(bytes.ok());
      auto frame = bytes ? check_frame(bytes.value()) : std::nullopt;
      if (!frame || frame->first != peer_stream || frame->second != next_expected) {
        ++bad;
      } else {
        ++next_expected;
      }
      EXPECT_TRUE(pool.free(owner, handles[i]).ok());
    }
    return got;
  }
};

Station make_station(PoolId id, ComponentId owner, std::uint32_t stream) {
  auto pool = BufferPool::create(id, kDefaultBufferSize, kPoolBuffers);
  if (!pool) std::abort();
  return Station{std::move(pool.value()), owner, nullptr, stream};
}

class MemwireTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int serial = 0;
    path_ = "/dev/shm/flotilla-wire-test-" + std::to_string(::getpid()) + "-" +
            std::to_string(serial++);
    ::unlink(path_.c_str());
  }
  void TearDown() override { ::unlink(path_.c_str()); }  // only matters when a test failed

  MemwireOptions options(Side side, std::uint32_t cells = 256) const {
    return MemwireOptions{path_, side, cells};
  }
  bool file_exists() const { return ::access(path_.c_str(), F_OK) == 0; }

  // Maps the wire file as a third party that scribbles on it.
  std::byte* map_file(std::size_t size) {
    const int fd = ::open(path_.c_str(), O_RDWR);
    EXPECT_GE(fd, 0);
    void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    EXPECT_NE(base, MAP_FAILED);
    return static_cast<std::byte*>(base);
  }
  static void put64(std::byte* base, std::size_t offset, std::uint64_t value) {
    std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(base + offset))
        .store(value, std::memory_order_release);
  }
  static std::uint64_t get64(std::byte* base, std::size_t offset) {
    return std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(base + offset))
        .load(std::memory_order_acquire);
  }

  std::string path_;
};

TEST_F(MemwireTest, ExchangesFramesBothWaysWithWrapAround) {
  constexpr std::uint64_t kFrames = 100'000;
  Station a = make_station(1, kOwnerA, 100);
  Station b = make_station(2, kOwnerB, 200);
  {
    auto port_a = MemwirePort::open(options(Side::a, 64), a.pool, kOwnerA);
    ASSERT_TRUE(port_a.ok()) << port_a.error().message();
    auto port_b = MemwirePort::open(options(Side::b, 1024), b.pool, kOwnerB);
    ASSERT_TRUE(port_b.ok()) << port_b.error().message();
    a.port = std::move(port_a.value());
    b.port = std::move(port_b.value());
  }
  EXPECT_EQ(b.port->cell_count(), 64u) << "the attaching side adopts the creator's cell count";
  EXPECT_TRUE(a.port->peer_attached());
  EXPECT_TRUE(b.port->peer_attached());

  std::uint64_t bursts = 0;
  while ((a.next_expected < kFrames || b.next_expected < kFrames) && bursts < 50 * kFrames) {
    ++bursts;
    a.send(1 + bursts % 37, kFrames);
    b.send(1 + bursts % 23, kFrames);
    a.receive(200);
    b.receive(100);
  }
  EXPECT_EQ(a.next_expected, kFrames);
  EXPECT_EQ(b.next_expected, kFrames);
  EXPECT_EQ(a.bad + b.bad, 0u);
  EXPECT_EQ(a.port->stats().tx_frames, kFrames);
  EXPECT_EQ(b.port->stats().rx_frames, kFrames);
  EXPECT_EQ(a.port->stats().rx_dropped + b.port->stats().rx_dropped, 0u);
  EXPECT_EQ(a.port->wire_stats().corrupt_indices + b.port->wire_stats().corrupt_indices, 0u);

  a.port.reset();
  EXPECT_TRUE(file_exists()) << "side b is still attached";
  EXPECT_FALSE(b.port->peer_attached());
  b.port.reset();
  EXPECT_FALSE(file_exists()) << "the last side out removes the file";
  EXPECT_EQ(a.pool.count_free(), kPoolBuffers);
  EXPECT_EQ(b.pool.count_free(), kPoolBuffers);
}

TEST_F(MemwireTest, FullRingAcceptsFewerAndLosesNothing) {
  Station a = make_station(1, kOwnerA, 100);
  Station b = make_station(2, kOwnerB, 200);
  a.port = std::move(MemwirePort::open(options(Side::a, 8), a.pool, kOwnerA).value());
  b.port = std::move(MemwirePort::open(options(Side::b), b.pool, kOwnerB).value());

  EXPECT_EQ(a.send(20, 100), 8u) << "eight cells";
  EXPECT_EQ(a.send(20, 100), 0u) << "still full";
  EXPECT_EQ(a.port->stats().tx_dropped, 0u) << "refused frames stay with the caller";
  EXPECT_EQ(b.receive(100), 8u);
  EXPECT_EQ(a.send(20, 100), 8u);
  EXPECT_EQ(b.receive(100), 8u);
  EXPECT_EQ(b.next_expected, 16u);
  EXPECT_EQ(b.bad, 0u);

  // A pool with nothing left leaves frames in the ring rather than dropping them: hold on to every
  // buffer b hands out until its pool runs dry.
  std::vector<BufferHandle> held;
  for (int round = 0; round < 1000 && held.size() < kPoolBuffers; ++round) {
    a.send(8, ~0ull);
    std::array<BufferHandle, 64> burst{};
    const std::size_t got = b.port->receive_burst(burst);
    held.insert(held.end(), burst.begin(), burst.begin() + static_cast<std::ptrdiff_t>(got));
  }
  ASSERT_EQ(held.size(), kPoolBuffers);
  a.send(8, ~0ull);
  EXPECT_EQ(a.send(8, ~0ull), 0u) << "the ring filled up behind the dry pool";
  std::array<BufferHandle, 64> burst{};
  EXPECT_EQ(b.port->receive_burst(burst), 0u);
  for (const auto& handle : held) ASSERT_TRUE(b.pool.free(kOwnerB, handle).ok());
  b.next_expected += kPoolBuffers;
  EXPECT_EQ(b.receive(100), 8u) << "the frames waited in the ring";
  EXPECT_EQ(b.next_expected, a.next_send);
  EXPECT_EQ(b.bad, 0u);
  EXPECT_EQ(b.port->stats().rx_dropped, 0u);

  a.port.reset();
  b.port.reset();
  EXPECT_EQ(a.pool.count_free(), kPoolBuffers);
  EXPECT_EQ(b.pool.count_free(), kPoolBuffers);
  EXPECT_FALSE(file_exists());
}

TEST_F(MemwireTest, ASecondProcessCannotTakeAnAttachedSide) {
  Station a = make_station(1, kOwnerA, 100);
  a.port = std::move(MemwirePort::open(options(Side::a), a.pool, kOwnerA).value());
  auto again = MemwirePort::open(options(Side::a), a.pool, kOwnerA);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, Errc::exhausted);
  EXPECT_FALSE(a.port->peer_attached());
  a.port.reset();
  EXPECT_FALSE(file_exists());
  EXPECT_EQ(a.pool.count_free(), kPoolBuffers);
}

// Progress the forked side b reports to the test through anonymous shared memory.
struct ChildProgress {
  std::atomic<std::uint64_t> verified;  // frames of stream 100 received and checked, in order
  std::atomic<std::uint64_t> sent;      // frames of stream 200 sent
  std::atomic<std::uint64_t> bad;
};

[[noreturn]] void run_child_side_b(const MemwireOptions& options, ChildProgress* progress) {
  auto pool = BufferPool::create(5, kDefaultBufferSize, kPoolBuffers);
  if (!pool) ::_exit(2);
  Station b{std::move(pool.value()), kOwnerB, nullptr, 200};
  auto port = MemwirePort::open(options, b.pool, kOwnerB);
  if (!port) ::_exit(3);
  b.port = std::move(port.value());
  for (;;) {  // until SIGKILL
    b.send(16, ~0ull);
    b.receive(100);
    progress->sent.store(b.next_send, std::memory_order_release);
    progress->verified.store(b.next_expected, std::memory_order_release);
    progress->bad.store(b.bad, std::memory_order_release);
  }
}

TEST_F(MemwireTest, KilledSideIsReplacedAndTrafficContinues) {
  void* shared = ::mmap(nullptr, sizeof(ChildProgress), PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(shared, MAP_FAILED);
  auto* progress = new (shared) ChildProgress{};

  Station a = make_station(1, kOwnerA, 100);
  a.port = std::move(MemwirePort::open(options(Side::a, 128), a.pool, kOwnerA).value());
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) run_child_side_b(options(Side::b), progress);

  // Run until the child has both received and sent a good amount, then kill it mid-stream.
  constexpr std::uint64_t kBeforeKill = 20'000;
  std::uint64_t spins = 0;
  while ((progress->verified.load() < kBeforeKill || a.next_expected < kBeforeKill) &&
         ++spins < 200'000'000) {
    a.send(16, ~0ull);
    a.receive(200);
  }
  ASSERT_EQ(::kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the child exited by itself with status " << status;
  EXPECT_EQ(progress->bad.load(), 0u);
  EXPECT_FALSE(a.port->peer_attached());
  const std::uint64_t child_verified = progress->verified.load();
  const std::uint64_t child_sent = progress->sent.load();

  // Whatever the dead side published still arrives, intact and in order.
  while (a.receive(200) > 0) {
  }
  // The child may have published one more burst after its last progress report.
  EXPECT_GE(a.next_expected, child_sent) << "every frame the child published arrived";
  EXPECT_LE(a.next_expected, child_sent + 16);
  EXPECT_GE(a.next_expected, kBeforeKill);
  EXPECT_EQ(a.bad, 0u);

  // A new side b (its own pool, a new stream) attaches and traffic carries on both ways.
  Station b = make_station(2, kOwnerB, 300);
  auto reopened = MemwirePort::open(options(Side::b), b.pool, kOwnerB);
  ASSERT_TRUE(reopened.ok()) << reopened.error().message();
  b.port = std::move(reopened.value());
  EXPECT_EQ(b.port->wire_stats().incarnation, 2u);
  EXPECT_EQ(b.port->wire_stats().attach_resets, 0u);
  EXPECT_TRUE(a.port->peer_attached());

  // The new side resumes at the old one's published index: nothing the child had checked comes
  // again, and at most the one burst the child had taken but not yet checked when it died is gone
  // (a receive ring releases cells as it copies them out).
  std::array<BufferHandle, 1> first{};
  std::uint64_t waits = 0;
  while (b.port->receive_burst(first) == 0 && ++waits < 1'000'000) a.send(1, ~0ull);
  ASSERT_LT(waits, 1'000'000u);
  auto first_frame = check_frame(b.pool.bytes(kOwnerB, first[0]).value());
  ASSERT_TRUE(first_frame.has_value());
  EXPECT_EQ(first_frame->first, 100u);
  EXPECT_GE(first_frame->second, child_verified);
  EXPECT_LE(first_frame->second, child_verified + 64);
  ASSERT_TRUE(b.pool.free(kOwnerB, first[0]).ok());
  b.next_expected = first_frame->second + 1;

  const std::uint64_t target = a.next_send + 10'000;
  a.next_expected = 0;  // the new side's stream 300 starts at zero
  while ((b.next_expected < target || a.next_expected < 10'000) && ++spins < 400'000'000) {
    a.send(16, target);
    b.send(16, 10'000);
    a.receive(300);
    b.receive(100);
  }
  EXPECT_EQ(b.next_expected, target);
  EXPECT_EQ(a.next_expected, 10'000u);
  EXPECT_EQ(a.bad + b.bad, 0u);

  a.port.reset();
  b.port.reset();
  EXPECT_FALSE(file_exists());
  EXPECT_EQ(a.pool.count_free(), kPoolBuffers);
  EXPECT_EQ(b.pool.count_free(), kPoolBuffers);
  ::munmap(shared, sizeof(ChildProgress));
}

TEST_F(MemwireTest, GarbageInCellsAndIndicesIsCountedAndSurvived) {
  Station b = make_station(2, kOwnerB, 200);
  b.port = std::move(MemwirePort::open(options(Side::b, 16), b.pool, kOwnerB).value());
  const std::size_t size = memwire::file_size_for(16);
  std::byte* file = map_file(size);

  // The test plays side a by hand. Three cells: lengths 0, too long, and a good frame.
  auto cell = [&](int ring, std::uint32_t index) {
    return file + memwire::cell_offset(16, ring, index & 15);
  };
  const std::uint32_t lengths[] = {0, 5000};
  for (int i = 0; i < 2; ++i) std::memcpy(cell(0, i), &lengths[i], 4);
  const std::uint32_t good = frame_length(100, 0);
  std::memcpy(cell(0, 2), &good, 4);
  fill_frame({cell(0, 2) + memwire::kCellHeaderSize, good}, 100, 0);
  put64(file, memwire::head_offset(0), 3);
  b.next_expected = 0;
  b.stream = 200;
  EXPECT_EQ(b.receive(100), 1u);
  EXPECT_EQ(b.next_expected, 1u);
  EXPECT_EQ(b.bad, 0u);
  EXPECT_EQ(b.port->wire_stats().bad_cells, 2u);
  EXPECT_EQ(b.port->stats().rx_dropped, 2u);
  EXPECT_EQ(get64(file, memwire::tail_offset(0)), 3u);

  // A head far beyond the tail: counted once per episode, never followed; the tail resyncs.
  put64(file, memwire::head_offset(0), 1ull << 60);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(b.receive(100), 0u);
  EXPECT_EQ(b.port->wire_stats().corrupt_indices, 1u);
  EXPECT_EQ(get64(file, memwire::tail_offset(0)), 1ull << 60);
  // ... and a sane producer carries on from there.
  const std::uint64_t base = 1ull << 60;
  const std::uint32_t next = frame_length(100, 1);
  std::memcpy(cell(0, static_cast<std::uint32_t>(base)), &next, 4);
  fill_frame({cell(0, static_cast<std::uint32_t>(base)) + memwire::kCellHeaderSize, next}, 100, 1);
  put64(file, memwire::head_offset(0), base + 1);
  EXPECT_EQ(b.receive(100), 1u);
  EXPECT_EQ(b.next_expected, 2u);

  // A consumer tail (side a's, on ring 1) that makes no sense: b's ring looks full, counted once.
  put64(file, memwire::tail_offset(1), 12345678);
  EXPECT_EQ(b.send(4, 100), 0u);
  EXPECT_EQ(b.send(4, 100), 0u);
  EXPECT_EQ(b.port->wire_stats().corrupt_indices, 2u);
  put64(file, memwire::tail_offset(1), get64(file, memwire::head_offset(1)));
  EXPECT_EQ(b.send(4, 100), 4u);

  // Someone scribbles on b's own indices: service() puts them back.
  put64(file, memwire::head_offset(1), 999);
  put64(file, memwire::tail_offset(0), 7);
  EXPECT_TRUE(b.port->service());
  EXPECT_FALSE(b.port->service());
  EXPECT_EQ(get64(file, memwire::head_offset(1)), 4u);
  EXPECT_EQ(get64(file, memwire::tail_offset(0)), base + 1);

  // A header turned to garbage: the attached side keeps its validated copy; a newcomer is refused.
  std::vector<std::byte> saved(file, file + 64);
  for (std::size_t i = 0; i < 64; ++i) file[i] = static_cast<std::byte>(mix64(i));
  Station a = make_station(1, kOwnerA, 100);
  auto refused = MemwirePort::open(options(Side::a), a.pool, kOwnerA);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, Errc::bad_layout);
  EXPECT_TRUE(file_exists()) << "a file that failed validation is not removed by the refused side";
  std::memcpy(file, saved.data(), 64);

  ::munmap(file, size);
  b.port.reset();
  EXPECT_FALSE(file_exists());
  EXPECT_EQ(a.pool.count_free(), kPoolBuffers);
  EXPECT_EQ(b.pool.count_free(), kPoolBuffers);
}

TEST_F(MemwireTest, RandomScribblingNeverCrashesAndTrafficRecovers) {
  Station a = make_station(1, kOwnerA, 100);
  Station b = make_station(2, kOwnerB, 200);
  a.port = std::move(MemwirePort::open(options(Side::a, 32), a.pool, kOwnerA).value());
  b.port = std::move(MemwirePort::open(options(Side::b), b.pool, kOwnerB).value());
  const std::size_t size = memwire::file_size_for(32);
  std::byte* file = map_file(size);

  std::uint64_t noise = 1;
  for (int round = 0; round < 20'000; ++round) {
    noise = mix64(noise);
    switch (noise % 6) {
      case 0: put64(file, memwire::head_offset(noise >> 8 & 1), mix64(noise + 1)); break;
      case 1: put64(file, memwire::tail_offset(noise >> 8 & 1), mix64(noise + 2)); break;
      case 2: {  // a small lie: a few cells more or fewer than the truth
        const std::size_t at = (noise >> 9 & 1) ? memwire::head_offset(noise >> 8 & 1)
                                                : memwire::tail_offset(noise >> 8 & 1);
        put64(file, at, get64(file, at) + (noise >> 16) % 70 - 35);
        break;
      }
      case 3: {
        const std::uint32_t length = static_cast<std::uint32_t>(mix64(noise + 3));
        std::memcpy(file + memwire::cell_offset(32, noise >> 8 & 1, (noise >> 16) & 31), &length, 4);
        break;
      }
      default: break;
    }
    a.send(8, ~0ull);
    b.send(8, ~0ull);
    a.receive(200);
    b.receive(100);
    if (round % 3 == 0) {
      a.port->service();
      b.port->service();
    }
  }
  ::munmap(file, size);
  EXPECT_GT(a.port->wire_stats().corrupt_indices + b.port->wire_stats().corrupt_indices, 0u);

  // Quiet again: a few passes settle the indices, then a clean exchange arrives intact.
  for (int pass = 0; pass < 4; ++pass) {
    a.port->service();
    b.port->service();
    a.receive(200);
    b.receive(100);
  }
  a.next_expected = b.next_send;
  b.next_expected = a.next_send;
  a.bad = b.bad = 0;
  const std::uint64_t a_target = a.next_send + 1000;
  const std::uint64_t b_target = b.next_send + 1000;
  for (int spin = 0; spin < 100'000 && (a.next_expected < b_target || b.next_expected < a_target);
       ++spin) {
    a.send(8, a_target);
    b.send(8, b_target);
    a.receive(200);
    b.receive(100);
  }
  EXPECT_EQ(a.next_expected, b_target);
  EXPECT_EQ(b.next_expected, a_target);
  EXPECT_EQ(a.bad + b.bad, 0u);

  a.port.reset();
  b.port.reset();
  EXPECT_FALSE(file_exists());
  EXPECT_EQ(a.pool.count_free(), kPoolBuffers);
  EXPECT_EQ(b.pool.count_free(), kPoolBuffers);
}

}  // namespace
}  // namespace flotilla::drivers
