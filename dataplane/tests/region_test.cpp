#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "dataplane/fd_passing.hpp"
#include "dataplane/shared_region.hpp"

namespace flotilla {
namespace {

TEST(SharedRegion, CreateRoundsToPagesAndZeroFills) {
  auto region = SharedRegion::create("test", 100);
  ASSERT_TRUE(region) << region.error().message();
  EXPECT_EQ(region->size(), 4096u);
  for (std::byte b : region->bytes()) ASSERT_EQ(b, std::byte{0});
}

TEST(SharedRegion, RejectsZeroSize) {
  auto region = SharedRegion::create("test", 0);
  ASSERT_FALSE(region);
  EXPECT_EQ(region.error().code, Errc::invalid_argument);
}

TEST(SharedRegion, SizeIsSealed) {
  auto region = SharedRegion::create("sealed", 4096);
  ASSERT_TRUE(region);
  EXPECT_NE(::ftruncate(region->fd(), 0), 0);
  EXPECT_NE(::ftruncate(region->fd(), 8192), 0);
}

TEST(SharedRegion, SecondMappingSeesTheSameBytes) {
  auto region = SharedRegion::create("shared", 8192);
  ASSERT_TRUE(region);
  auto copy = SharedRegion::attach(UniqueFd(::dup(region->fd())));
  ASSERT_TRUE(copy) << copy.error().message();
  EXPECT_EQ(copy->size(), 8192u);
  std::memcpy(region->data() + 5000, "flotilla", 8);
  EXPECT_EQ(std::memcmp(copy->data() + 5000, "flotilla", 8), 0);
}

TEST(SharedRegion, AttachRefusesUnsealedFile) {
  UniqueFd fd(::memfd_create("unsealed", MFD_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  ASSERT_EQ(::ftruncate(fd.get(), 4096), 0);
  auto region = SharedRegion::attach(std::move(fd));
  ASSERT_FALSE(region);
  EXPECT_EQ(region.error().code, Errc::bad_layout);
}

TEST(SharedRegion, AttachRefusesBadDescriptor) {
  auto region = SharedRegion::attach(UniqueFd());
  ASSERT_FALSE(region);
  EXPECT_EQ(region.error().code, Errc::invalid_argument);
}

TEST(SharedRegion, ReadOnlyDescriptorCannotBeMappedWritable) {
  auto region = SharedRegion::create("ro", 4096);
  ASSERT_TRUE(region);
  auto read_only = region->reopen_read_only();
  ASSERT_TRUE(read_only) << read_only.error().message();
  void* writable = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, read_only->get(), 0);
  EXPECT_EQ(writable, MAP_FAILED);
  auto view = SharedRegion::attach(std::move(read_only.value()), SharedRegion::Access::read_only);
  ASSERT_TRUE(view) << view.error().message();
  region->data()[10] = std::byte{42};
  EXPECT_EQ(view->data()[10], std::byte{42});
}

TEST(SharedRegion, AtChecksBounds) {
  auto region = SharedRegion::create("bounds", 4096);
  ASSERT_TRUE(region);
  EXPECT_NE(region->at<std::uint64_t>(4088), nullptr);
  EXPECT_EQ(region->at<std::uint64_t>(4089), nullptr);
  EXPECT_EQ(region->at<std::uint64_t>(1u << 30), nullptr);
}

// Discarding zeroes exactly the bytes asked for, and the whole pages among them leave the memfd
// (every mapping of it sees zeros), so a region's memory follows what is in use.
TEST(SharedRegion, DiscardZeroesTheBytesAndGivesWholePagesBack) {
  constexpr std::size_t kPage = 4096;
  auto region = SharedRegion::create("discard-test", 64 * kPage);
  ASSERT_TRUE(region) << region.error().message();
  std::memset(region->data(), 0xab, region->size());
  struct stat before {};
  ASSERT_EQ(::fstat(region->fd(), &before), 0);
  discard_memory(region->bytes().subspan(kPage + 100, 32 * kPage));
  struct stat after {};
  ASSERT_EQ(::fstat(region->fd(), &after), 0);
  EXPECT_LE(after.st_blocks * 512, before.st_blocks * 512 - 31 * kPage) << "the whole pages stayed allocated";
  const auto bytes = region->bytes();
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    const bool discarded = i >= kPage + 100 && i < 33 * kPage + 100;
    ASSERT_EQ(bytes[i], discarded ? std::byte{0} : std::byte{0xab}) << "byte " << i;
  }
  std::vector<std::byte> plain(3 * kPage, std::byte{0xab});  // not shared memory: zeroed in place
  discard_memory(std::span(plain).subspan(10, 2 * kPage));
  for (std::size_t i = 0; i < plain.size(); ++i) {
    ASSERT_EQ(plain[i], i >= 10 && i < 2 * kPage + 10 ? std::byte{0} : std::byte{0xab}) << "byte " << i;
  }
}

TEST(FdPassing, RegionTravelsOverUnixSocket) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd left(pair[0]), right(pair[1]);
  auto region = SharedRegion::create("passed", 4096);
  ASSERT_TRUE(region);
  std::memcpy(region->data(), "hello", 5);

  const std::byte tag[] = {std::byte{'R'}};
  const int fds[] = {region->fd()};
  ASSERT_TRUE(send_fds(left.get(), tag, fds));

  std::byte payload[16];
  auto received = recv_fds(right.get(), payload);
  ASSERT_TRUE(received) << received.error().message();
  EXPECT_EQ(received->payload_bytes, 1u);
  EXPECT_EQ(payload[0], std::byte{'R'});
  ASSERT_EQ(received->fds.size(), 1u);
  EXPECT_EQ(::fcntl(received->fds[0].get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  auto mapped = SharedRegion::attach(std::move(received->fds[0]));
  ASSERT_TRUE(mapped) << mapped.error().message();
  EXPECT_EQ(std::memcmp(mapped->data(), "hello", 5), 0);
}

TEST(FdPassing, TruncatedPayloadIsAnErrorAndClosesDescriptors) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd left(pair[0]), right(pair[1]);
  const std::byte big[8] = {};
  const int fds[] = {STDIN_FILENO};
  ASSERT_TRUE(send_fds(left.get(), big, fds));
  std::byte small[2];
  auto received = recv_fds(right.get(), small);
  ASSERT_FALSE(received);
  EXPECT_EQ(received.error().code, Errc::truncated);
}

TEST(FdPassing, ClosedPeerIsReported) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd right(pair[1]);
  ::close(pair[0]);
  std::byte payload[4];
  auto received = recv_fds(right.get(), payload);
  ASSERT_FALSE(received);
  EXPECT_EQ(received.error().code, Errc::closed);
}

TEST(FdPassing, RejectsEmptyPayloadAndTooManyFds) {
  const int fds[kMaxPassedFds + 1] = {};
  const std::byte one[1] = {};
  EXPECT_EQ(send_fds(0, {}, {}).error().code, Errc::invalid_argument);
  EXPECT_EQ(send_fds(0, one, fds).error().code, Errc::invalid_argument);
}

}  // namespace
}  // namespace flotilla
