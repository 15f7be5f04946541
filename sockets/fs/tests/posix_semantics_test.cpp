// POSIX semantics, each scenario run against the fleet and against a real tmpfs directory with
// the same expectations. `a` and `b` are two processes (two clients of the fleet; two sets of
// descriptors on tmpfs).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <set>

#include "sockets/fs/tests/fleet_sim.hpp"
#include "sockets/fs/tests/fs_api.hpp"

namespace flotilla::fs::testing {
namespace {

using Scenario = std::function<void(FsApi& a, FsApi& b)>;

std::string temporary_directory() {
  for (const char* root : {"/dev/shm", "/tmp"}) {
    std::string pattern = std::string(root) + "/flotilla-fs-XXXXXX";
    if (::mkdtemp(pattern.data()) != nullptr) return pattern;
  }
  return {};
}

class PosixSemantics : public ::testing::TestWithParam<const char*> {
 protected:
  void check(const Scenario& scenario) {
    if (std::string(GetParam()) == "tmpfs") {
      const std::string dir = temporary_directory();
      ASSERT_FALSE(dir.empty());
      PosixApi a(dir);
      PosixApi b(dir);
      scenario(a, b);
      std::filesystem::remove_all(dir);
      return;
    }
    SimOptions options;
    options.servers = 3;
    options.clients = 2;
    FleetSim sim(options);
    FleetApi a(sim.client(0));
    FleetApi b(sim.client(1));
    ASSERT_TRUE(sim.run_one(0, [&](Client&) { scenario(a, b); }));
    EXPECT_EQ(sim.malformed(), 0u);
  }
};

TEST_P(PosixSemantics, CreateWriteReadBack) {
  check([](FsApi& a, FsApi&) {
    const int fd = a.open("f", O_CREAT | O_RDWR);
    ASSERT_GE(fd, 0);
    EXPECT_EQ(a.write(fd, "hello world"), 11);
    EXPECT_EQ(a.lseek(fd, 0, SEEK_SET), 0);
    std::string out;
    EXPECT_EQ(a.read(fd, out, 100), 11);
    EXPECT_EQ(out, "hello world");
    EXPECT_EQ(a.read(fd, out, 100), 0);
    EXPECT_EQ(a.pread(fd, out, 5, 6), 5);
    EXPECT_EQ(out, "world");
    // A write past the end leaves a hole that reads as zeros.
    EXPECT_EQ(a.pwrite(fd, "!", 20), 1);
    EXPECT_EQ(a.fstat_size(fd), 21);
    EXPECT_EQ(a.pread(fd, out, 10, 11), 10);
    EXPECT_EQ(out, std::string(9, '\0') + "!");
    EXPECT_EQ(a.lseek(fd, 0, SEEK_END), 21);
    EXPECT_EQ(a.close(fd), 0);
    EXPECT_EQ(a.stat_size("f"), 21);
    EXPECT_EQ(a.stat_type("f"), S_IFREG);
  });
}

TEST_P(PosixSemantics, LargeFileSpansManyBlocks) {
  check([](FsApi& a, FsApi& b) {
    std::string data;
    for (int i = 0; i < 3 * 4096 + 777; ++i) data.push_back(static_cast<char>('a' + i % 23));
    ASSERT_EQ(a.spit("big", data), 0);
    std::string back;
    ASSERT_EQ(b.slurp("big", back), 0);
    EXPECT_EQ(back, data);
    EXPECT_EQ(b.stat_size("big"), static_cast<long>(data.size()));
  });
}

TEST_P(PosixSemantics, ReaddirListsEveryEntryOnce) {
  check([](FsApi& a, FsApi& b) {
    ASSERT_EQ(a.mkdir("d", true), 0);
    std::set<std::string> made;
    for (int i = 0; i < 150; ++i) {  // more than one dirent reply holds, from every server
      const std::string name = "entry" + std::to_string(i);
      ASSERT_EQ(a.spit("d/" + name, name), 0);
      made.insert(name);
    }
    ASSERT_EQ(a.mkdir("d/sub"), 0);
    made.insert("sub");
    std::vector<std::string> names;
    ASSERT_EQ(b.readdir("d", names), 0);
    EXPECT_EQ(names.size(), made.size());
    EXPECT_EQ(std::set<std::string>(names.begin(), names.end()), made);
    ASSERT_EQ(a.mkdir("flat"), 0);
    for (int i = 0; i < 60; ++i) ASSERT_EQ(a.spit("flat/" + std::string(30, 'l') + std::to_string(i), ""), 0);
    std::vector<std::string> flat;
    ASSERT_EQ(b.readdir("flat", flat), 0);
    EXPECT_EQ(std::set<std::string>(flat.begin(), flat.end()).size(), 60u);
    EXPECT_EQ(flat.size(), 60u);
    std::vector<std::string> none;
    EXPECT_EQ(b.readdir("d/entry1", none), -ENOTDIR);
    EXPECT_EQ(b.readdir("missing", none), -ENOENT);
  });
}

TEST_P(PosixSemantics, OrphanFileStaysReadableAfterUnlink) {
  check([](FsApi& a, FsApi& b) {
    ASSERT_EQ(a.spit("orphan", "still here"), 0);
    const int fd = a.open("orphan", O_RDONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(b.unlink("orphan"), 0);
    EXPECT_EQ(b.stat_size("orphan"), -ENOENT);
    std::string out;
    EXPECT_EQ(a.read(fd, out, 100), 10);
    EXPECT_EQ(out, "still here");
    EXPECT_EQ(a.close(fd), 0);
  });
}

TEST_P(PosixSemantics, RenameReplacesTheTarget) {
  check([](FsApi& a, FsApi& b) {
    ASSERT_EQ(a.spit("one", "first"), 0);
    ASSERT_EQ(a.spit("two", "second"), 0);
    ASSERT_EQ(a.rename("one", "two"), 0);
    std::string out;
    ASSERT_EQ(b.slurp("two", out), 0);
    EXPECT_EQ(out, "first");
    EXPECT_EQ(b.stat_size("one"), -ENOENT);
    ASSERT_EQ(a.mkdir("dir"), 0);
    ASSERT_EQ(a.rename("two", "dir/moved"), 0);
    ASSERT_EQ(b.slurp("dir/moved", out), 0);
    EXPECT_EQ(out, "first");
    EXPECT_EQ(a.rename("missing", "x"), -ENOENT);
    ASSERT_EQ(a.mkdir("empty"), 0);
    EXPECT_EQ(a.rename("dir/moved", "empty"), -EISDIR);
    EXPECT_EQ(a.rename("dir", "dir/inside"), -EINVAL);  // into its own subtree
    EXPECT_EQ(a.rename("dir/moved", "dir"), -ENOTEMPTY);  // over its own ancestor
  });
}

TEST_P(PosixSemantics, ErrorsMatchLinux) {
  check([](FsApi& a, FsApi&) {
    EXPECT_EQ(a.open("missing", O_RDONLY), -ENOENT);
    ASSERT_EQ(a.spit("file", "x"), 0);
    EXPECT_EQ(a.open("file", O_CREAT | O_EXCL | O_WRONLY), -EEXIST);
    EXPECT_EQ(a.mkdir("file"), -EEXIST);
    EXPECT_EQ(a.open("file/inside", O_RDONLY), -ENOTDIR);
    EXPECT_EQ(a.open("file/inside", O_CREAT | O_WRONLY), -ENOTDIR);
    ASSERT_EQ(a.mkdir("dir"), 0);
    ASSERT_EQ(a.spit("dir/child", "y"), 0);
    EXPECT_EQ(a.rmdir("dir"), -ENOTEMPTY);
    EXPECT_EQ(a.rmdir("file"), -ENOTDIR);
    EXPECT_EQ(a.unlink("dir"), -EISDIR);
    EXPECT_EQ(a.open("dir", O_WRONLY), -EISDIR);
    EXPECT_EQ(a.open(std::string(256, 'n'), O_CREAT | O_WRONLY), -ENAMETOOLONG);
    EXPECT_EQ(a.mkdir("missing/sub"), -ENOENT);
    EXPECT_EQ(a.unlink("missing"), -ENOENT);
    EXPECT_EQ(a.rmdir("missing"), -ENOENT);
    ASSERT_EQ(a.unlink("dir/child"), 0);
    EXPECT_EQ(a.rmdir("dir"), 0);
    EXPECT_EQ(a.stat_size("dir"), -ENOENT);
    EXPECT_EQ(a.close(12345), -EBADF);
  });
}

TEST_P(PosixSemantics, CloseToOpenBetweenTwoProcesses) {
  check([](FsApi& a, FsApi& b) {
    const int fd = a.open("shared", O_CREAT | O_WRONLY | O_TRUNC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(a.write(fd, "version one"), 11);
    ASSERT_EQ(a.close(fd), 0);
    std::string out;
    ASSERT_EQ(b.slurp("shared", out), 0);
    EXPECT_EQ(out, "version one");
    const int again = a.open("shared", O_WRONLY);
    ASSERT_GE(again, 0);
    ASSERT_EQ(a.pwrite(again, "VERSION TWO, longer", 0), 19);
    ASSERT_EQ(a.fsync(again), 0);  // fsync publishes like close
    ASSERT_EQ(b.slurp("shared", out), 0);
    EXPECT_EQ(out, "VERSION TWO, longer");
    ASSERT_EQ(a.close(again), 0);
  });
}

TEST_P(PosixSemantics, TruncateChmodAndSymlinks) {
  check([](FsApi& a, FsApi& b) {
    ASSERT_EQ(a.spit("t", std::string(5000, 'z')), 0);
    ASSERT_EQ(a.truncate("t", 10), 0);
    EXPECT_EQ(b.stat_size("t"), 10);
    ASSERT_EQ(a.truncate("t", 20), 0);
    std::string out;
    ASSERT_EQ(b.slurp("t", out), 0);
    EXPECT_EQ(out, std::string(10, 'z') + std::string(10, '\0'));
    const int fd = a.open("t", O_RDWR);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(a.ftruncate(fd, 3), 0);
    EXPECT_EQ(a.fstat_size(fd), 3);
    ASSERT_EQ(a.close(fd), 0);
    ASSERT_EQ(a.chmod("t", 0600), 0);
    EXPECT_EQ(b.mode_of("t"), 0600);
    const std::uint64_t when = 1'600'000'000'123'456'789ull;
    ASSERT_EQ(a.utimens("t", when, when), 0);
    EXPECT_EQ(b.mtime_of("t"), static_cast<long long>(when));
    EXPECT_EQ(a.utimens("missing", when, when), -ENOENT);
    ASSERT_EQ(a.mkdir("real"), 0);
    ASSERT_EQ(a.spit("real/file", "through a link"), 0);
    ASSERT_EQ(a.symlink("real", "link"), 0);
    std::string target;
    ASSERT_EQ(b.readlink("link", target), 0);
    EXPECT_EQ(target, "real");
    EXPECT_EQ(b.stat_type("link"), S_IFLNK);
    ASSERT_EQ(b.slurp("link/file", out), 0);
    EXPECT_EQ(out, "through a link");
    ASSERT_EQ(a.symlink("real/file", "filelink"), 0);
    ASSERT_EQ(b.slurp("filelink", out), 0);
    EXPECT_EQ(out, "through a link");
    EXPECT_EQ(b.readlink("t", target), -EINVAL);
    EXPECT_EQ(a.symlink("x", "link"), -EEXIST);
  });
}

TEST_P(PosixSemantics, AppendGoesToTheEndOfOtherWriters) {
  check([](FsApi& a, FsApi& b) {
    ASSERT_EQ(a.spit("log", "start;"), 0);
    const int fa = a.open("log", O_WRONLY | O_APPEND);
    const int fb = b.open("log", O_WRONLY | O_APPEND);
    ASSERT_GE(fa, 0);
    ASSERT_GE(fb, 0);
    ASSERT_EQ(a.write(fa, "a1;"), 3);
    ASSERT_EQ(b.write(fb, "b1;"), 3);
    ASSERT_EQ(a.write(fa, "a2;"), 3);
    ASSERT_EQ(a.close(fa), 0);
    ASSERT_EQ(b.close(fb), 0);
    std::string out;
    ASSERT_EQ(a.slurp("log", out), 0);
    EXPECT_EQ(out, "start;a1;b1;a2;");
  });
}

INSTANTIATE_TEST_SUITE_P(Backends, PosixSemantics, ::testing::Values("fleet", "tmpfs"),
                         [](const auto& info) { return std::string(info.param); });

// Hare's fd-sharing example on tmpfs: dup2(open(file), 1), fork, the child execs `echo hello`,
// the parent waits and writes "world.".
TEST(SharedDescriptors, HaresExampleOnTmpfs) {
  const std::string dir = temporary_directory();
  ASSERT_FALSE(dir.empty());
  const std::string file = dir + "/out";
  const int fd = ::open(file.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::dup2(fd, 1);
    ::execlp("echo", "echo", "hello", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_EQ(::write(fd, "world.\n", 7), 7);
  ::close(fd);
  PosixApi api(dir);
  std::string out;
  ASSERT_EQ(api.slurp("out", out), 0);
  EXPECT_EQ(out, "hello\nworld.\n");
  std::filesystem::remove_all(dir);
}

// The same on the fleet: the parent shares its descriptor with the child (client 1), whose
// writes move the shared offset at the server.
TEST(SharedDescriptors, HaresExampleOnTheFleet) {
  FleetSim sim(SimOptions{});
  ASSERT_TRUE(sim.run_one(0, [&](Client& parent) {
    const int fd = parent.open("/out", O_CREAT | O_WRONLY | O_TRUNC);
    ASSERT_GE(fd, 0);
    SharedDescriptor shared;
    ASSERT_EQ(parent.share(fd, sim.client_id(1), shared), 0);
    Client& child = sim.client(1);
    const int inherited = child.inherit(shared);
    ASSERT_GE(inherited, 0);
    const std::string hello = "hello\n";
    ASSERT_EQ(child.write(inherited, std::as_bytes(std::span(hello.data(), hello.size()))), 6);
    std::array<std::byte, 16> seen{};
    EXPECT_EQ(child.pread(inherited, seen, 0), -EBADF);  // opened write-only
    ASSERT_EQ(child.close(inherited), 0);
    const std::string world = "world.\n";
    ASSERT_EQ(parent.write(fd, std::as_bytes(std::span(world.data(), world.size()))), 7);
    // The child is gone: the offset came back to the parent, so this write is local.
    ASSERT_EQ(parent.close(fd), 0);
    FleetApi api(parent);
    std::string out;
    ASSERT_EQ(api.slurp("out", out), 0);
    EXPECT_EQ(out, "hello\nworld.\n");
  }));
}

// A descriptor shared for reading: each holder's read moves the one offset at the server, and
// pread sees what the other holder wrote.
TEST(SharedDescriptors, ReadsShareOneOffset) {
  FleetSim sim(SimOptions{});
  ASSERT_TRUE(sim.run_one(0, [&](Client& parent) {
    FleetApi api(parent);
    ASSERT_EQ(api.spit("data", "0123456789"), 0);
    const int fd = parent.open("/data", O_RDWR);
    ASSERT_GE(fd, 0);
    SharedDescriptor shared;
    ASSERT_EQ(parent.share(fd, sim.client_id(1), shared), 0);
    Client& child = sim.client(1);
    const int inherited = child.inherit(shared);
    ASSERT_GE(inherited, 0);
    std::array<std::byte, 4> buffer{};
    ASSERT_EQ(child.read(inherited, buffer), 4);
    ASSERT_EQ(parent.read(fd, buffer), 4);
    EXPECT_EQ(std::to_integer<char>(buffer[0]), '4');
    const std::string more = "ABCDEF";
    ASSERT_EQ(parent.pwrite(fd, std::as_bytes(std::span(more.data(), more.size())), 10), 6);
    ASSERT_EQ(parent.fsync(fd), 0);
    std::array<std::byte, 16> all{};
    EXPECT_EQ(child.pread(inherited, all, 0), 16);
    EXPECT_EQ(std::to_integer<char>(all[15]), 'F');
    ASSERT_EQ(child.close(inherited), 0);
    ASSERT_EQ(parent.read(fd, buffer), 4);  // the last holder: the offset comes back here
    EXPECT_EQ(std::to_integer<char>(buffer[0]), '8');
    ASSERT_EQ(parent.read(fd, buffer), 4);
    EXPECT_EQ(std::to_integer<char>(buffer[0]), 'C');
    ASSERT_EQ(parent.close(fd), 0);
  }));
}

TEST(ClientLimits, FullBufferCacheGivesEnospcAndLongPathsEnametoolong) {
  SimOptions options;
  options.servers = 1;
  options.blocks = 8;
  FleetSim sim(options);
  ASSERT_TRUE(sim.run_one(0, [&](Client& client) {
    const int fd = client.open("/big", O_CREAT | O_WRONLY);
    ASSERT_GE(fd, 0);
    const std::vector<std::byte> data(9 * kBlockBytes, std::byte{7});
    EXPECT_EQ(client.write(fd, data), -ENOSPC);
    EXPECT_EQ(client.write(fd, std::span(data).first(8 * kBlockBytes)), 8 * static_cast<ssize_t>(kBlockBytes));
    ASSERT_EQ(client.close(fd), 0);
    ASSERT_EQ(client.unlink("/big"), 0);  // the blocks come back
    const int again = client.open("/again", O_CREAT | O_WRONLY);
    EXPECT_EQ(client.write(again, std::span(data).first(8 * kBlockBytes)), 8 * static_cast<ssize_t>(kBlockBytes));
    ASSERT_EQ(client.close(again), 0);
    std::string path;
    while (path.size() <= 4096) path += "/abcdefgh";
    EXPECT_EQ(client.open(path, O_RDONLY), -ENAMETOOLONG);
  }));
}

TEST(ClientLimits, DescriptorTableGivesEmfile) {
  FleetSim sim(SimOptions{});
  ASSERT_TRUE(sim.run_one(0, [&](Client& client) {
    std::vector<int> fds;
    int fd = 0;
    while ((fd = client.open("/many", O_CREAT | O_RDONLY)) >= 0 && fds.size() < 5000) {
      fds.push_back(fd);
    }
    EXPECT_EQ(fd, -EMFILE);
    EXPECT_EQ(fds.size(), 1024u);
    for (int open_fd : fds) EXPECT_EQ(client.close(open_fd), 0);
    EXPECT_EQ(client.open_descriptors(), 0u);
  }));
}

}  // namespace
}  // namespace flotilla::fs::testing
