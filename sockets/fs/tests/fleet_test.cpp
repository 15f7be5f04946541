// Concurrency on the simulated fleet: several clients interleaved message by message in a seeded
// order, each test over many seeds.
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "sockets/fs/tests/fleet_sim.hpp"
#include "sockets/fs/tests/fs_api.hpp"

namespace flotilla::fs::testing {
namespace {

#ifdef FLOTILLA_FS_SOAK
constexpr std::uint64_t kSeeds = 10000;
#else
constexpr std::uint64_t kSeeds = 150;
#endif

// A fleet of one server, whose request count is every message of a call.
SimOptions one_server() {
  SimOptions options;
  options.servers = 1;
  return options;
}

std::uint64_t requests_at(FleetSim& sim, ServerIndex server) { return sim.server(server).stats().requests; }

// Two names in the root whose entries live on different servers.
std::pair<std::string, std::string> names_on_two_servers(std::uint16_t servers) {
  for (int i = 0;; ++i) {
    const std::string a = "a" + std::to_string(i);
    const std::string b = "b" + std::to_string(i);
    if (entry_server(kRootInode, true, a, servers) != entry_server(kRootInode, true, b, servers)) {
      return {a, b};
    }
  }
}

TEST(Fleet, RenameAcrossServersIsAtomicToAConcurrentReader) {
  const auto [target, source] = names_on_two_servers(3);
  for (std::uint64_t seed = 1; seed <= kSeeds / 3; ++seed) {
    SimOptions options;
    options.seed = seed;
    FleetSim sim(options);
    ASSERT_TRUE(sim.run_one(0, [&](Client& client) {
      FleetApi api(client);
      ASSERT_EQ(api.spit(target, "old"), 0);
      ASSERT_EQ(api.spit(source, "new"), 0);
    }));
    int saw_new = 0;
    ASSERT_TRUE(sim.run({
        [&](Client& writer) { EXPECT_EQ(FleetApi(writer).rename(source, target), 0); },
        [&](Client& reader) {
          FleetApi api(reader);
          for (int i = 0; i < 6; ++i) {
            std::string out;
            ASSERT_EQ(api.slurp(target, out), 0) << "seed " << seed << " read " << i;
            ASSERT_TRUE(out == "old" || out == "new") << out;
            saw_new += out == "new";
          }
        },
    }));
    ASSERT_TRUE(sim.run_one(1, [&](Client& reader) {
      FleetApi api(reader);
      std::string out;
      ASSERT_EQ(api.slurp(target, out), 0);
      EXPECT_EQ(out, "new");
      EXPECT_EQ(api.stat_size(source), -ENOENT);
    }));
  }
}

TEST(Fleet, StaleLookupIsNeverUsedAfterARename) {
  FleetSim sim(SimOptions{});
  ASSERT_TRUE(sim.run_one(0, [&](Client& a) {
    Client& b = sim.client(1);
    FleetApi api_a(a);
    ASSERT_EQ(a.mkdir("/d", 0755, true), 0);
    ASSERT_EQ(api_a.spit("d/x", "content"), 0);
    FileStat st;
    ASSERT_EQ(b.stat("/d/x", st), 0);  // b caches /d and /d/x
    ASSERT_EQ(b.stat("/d/x", st), 0);
    const auto hits = b.cached_lookups();
    EXPECT_GT(hits, 0u);
    ASSERT_EQ(a.rename("/d/x", "/d/y"), 0);
    EXPECT_EQ(b.stat("/d/x", st), -ENOENT);
    EXPECT_EQ(b.stat("/d/y", st), 0);
    // And a directory renamed away: lookups through its old name fail too.
    ASSERT_EQ(a.rename("/d", "/e"), 0);
    EXPECT_EQ(b.stat("/d/y", st), -ENOENT);
    EXPECT_EQ(b.stat("/e/y", st), 0);
    ASSERT_EQ(a.unlink("/e/y"), 0);
    EXPECT_EQ(b.stat("/e/y", st), -ENOENT);
  }));
}

TEST(Fleet, StatSeesTheLatestSizeWhetherItsLookupWasCachedOrNot) {
  FleetSim sim(SimOptions{});
  ASSERT_TRUE(sim.run_one(0, [&](Client& a) {
    Client& b = sim.client(1);
    const std::string text = "twelve bytes";
    const auto bytes = std::as_bytes(std::span(text));
    const int fd = a.open("/grows", O_CREAT | O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(a.write(fd, bytes), static_cast<ssize_t>(bytes.size()));
    FileStat st;
    // The writer sees its own unpublished write.
    ASSERT_EQ(a.stat("/grows", st), 0);
    EXPECT_EQ(st.size, bytes.size());
    ASSERT_EQ(a.close(fd), 0);
    ASSERT_EQ(b.stat("/grows", st), 0);  // a fresh lookup: the attributes come with it
    EXPECT_EQ(st.size, bytes.size());

    ASSERT_EQ(b.stat("/grows", st), 0);  // cached lookup
    EXPECT_EQ(st.size, bytes.size());
    EXPECT_EQ(st.type, FileType::regular);
    ASSERT_EQ(b.lstat("/grows", st), 0);
    EXPECT_EQ(st.size, bytes.size());
  }));
}

TEST(Fleet, StatAndRmdirTakeOneMessageWhenOneServerHoldsEverything) {
  FleetSim sim(one_server());
  ASSERT_TRUE(sim.run_one(0, [&](Client& a) {
    Client& b = sim.client(1);
    ASSERT_EQ(a.mkdir("/d", 0755), 0);
    ASSERT_EQ(a.mkdir("/d/e", 0755), 0);
    const int fd = a.open("/d/e/f", O_CREAT | O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(a.close(fd), 0);
    FileStat st;
    ASSERT_EQ(b.stat("/d", st), 0);  // b caches /d
    ASSERT_EQ(b.stat("/d/e", st), 0);  // and /d/e
    auto requests = [&] { return requests_at(sim, 0); };
    std::uint64_t before = requests();
    ASSERT_EQ(b.stat("/d/e/f", st), 0);  // resolve, with the attributes
    EXPECT_EQ(requests() - before, 1u);
    EXPECT_EQ(st.type, FileType::regular);
    before = requests();
    EXPECT_EQ(b.rmdir("/d/e"), -ENOTEMPTY);  // the whole rmdir at the home, refused: nothing to undo
    EXPECT_EQ(requests() - before, 1u);
    ASSERT_EQ(b.unlink("/d/e/f"), 0);
    before = requests();
    ASSERT_EQ(b.rmdir("/d/e"), 0);  // the whole rmdir and its entry at the home (the unlink looked /d/e up)
    EXPECT_EQ(requests() - before, 1u);
    EXPECT_EQ(a.stat("/d/e", st), -ENOENT);
    EXPECT_EQ(b.stat("/d/e", st), -ENOENT);
    std::vector<DirEntry> entries;
    ASSERT_EQ(b.readdir("/d", entries), 0);
    EXPECT_TRUE(entries.empty());
  }));
}

// Hare's writes benchmark: the first file written in ten pieces of 4 KiB takes one BLOCKS (the OPEN
// brought the first block), besides its OPEN and the CLOSE that publishes what was written (it took
// a FLUSH and a CLOSE). The next such file takes none: its OPEN brings as many blocks as the last
// file grew to.
TEST(Fleet, TenWritesOf4KiBTakeOneBlocksMessageThenNone) {
  FleetSim sim(one_server());
  ASSERT_TRUE(sim.run_one(0, [&](Client& a) {
    const std::vector<std::byte> block(kBlockBytes, std::byte{7});
    auto requests = [&] { return requests_at(sim, 0); };
    for (const std::uint64_t expected : {3u, 2u, 2u}) {
      const std::uint64_t before = requests();
      const std::string path = "/written" + std::to_string(expected) + std::to_string(before);
      const int fd = a.open(path, O_CREAT | O_WRONLY | O_TRUNC);
      ASSERT_GE(fd, 0);
      for (int i = 0; i < 10; ++i) ASSERT_EQ(a.write(fd, block), static_cast<ssize_t>(block.size()));
      ASSERT_EQ(a.close(fd), 0);
      EXPECT_EQ(requests() - before, expected);
      FileStat st;
      ASSERT_EQ(a.stat(path, st), 0);
      EXPECT_EQ(st.size, 10 * kBlockBytes);
      EXPECT_EQ(st.blocks * 512, 10 * kBlockBytes);  // what was taken past the end went back at close
    }
    // After a file left empty, the next create takes no block, and its first write asks for it.
    const int empty = a.open("/empty", O_CREAT | O_WRONLY);
    ASSERT_GE(empty, 0);
    ASSERT_EQ(a.close(empty), 0);
    std::uint64_t before = requests();
    const int small = a.open("/small", O_CREAT | O_WRONLY);
    ASSERT_GE(small, 0);
    FileStat st;
    ASSERT_EQ(a.fstat(small, st), 0);
    EXPECT_EQ(st.blocks, 0u);
    ASSERT_EQ(a.write(small, std::span(block).first(100)), 100);
    ASSERT_EQ(a.close(small), 0);
    EXPECT_EQ(requests() - before, 4u);  // OPEN, the fstat's FSTAT, BLOCKS, CLOSE
    // And a file like that one comes with its block again.
    before = requests();
    const int like = a.open("/like", O_CREAT | O_WRONLY);
    ASSERT_GE(like, 0);
    ASSERT_EQ(a.write(like, std::span(block).first(100)), 100);
    ASSERT_EQ(a.close(like), 0);
    EXPECT_EQ(requests() - before, 2u);
  }));
}

// The attribute cache: a stat or fstat of a file nobody changed is answered by the client, and a
// change by another client is seen at once (its server invalidated the kept attributes before it
// answered the change).
TEST(Fleet, KeptAttributesAreUsedUntilAnotherClientChangesThem) {
  FleetSim sim(one_server());
  ASSERT_TRUE(sim.run_one(0, [&](Client& a) {
    Client& b = sim.client(1);
    auto requests = [&] { return requests_at(sim, 0); };
    ASSERT_EQ(FleetApi(a).spit("f", "first"), 0);
    FileStat st;
    ASSERT_EQ(a.stat("/f", st), 0);
    EXPECT_EQ(st.mode & 07777, 0644u);
    std::uint64_t before = requests();
    ASSERT_EQ(a.stat("/f", st), 0);
    ASSERT_EQ(a.lstat("/f", st), 0);
    EXPECT_EQ(requests() - before, 0u);  // kept

    ASSERT_EQ(b.chmod("/f", 0600), 0);
    before = requests();
    ASSERT_EQ(a.stat("/f", st), 0);
    EXPECT_EQ(st.mode & 07777, 0600u);
    EXPECT_EQ(requests() - before, 1u);  // asked again, once

    const int fd = a.open("/f", O_RDONLY);
    ASSERT_GE(fd, 0);
    before = requests();
    ASSERT_EQ(a.fstat(fd, st), 0);
    EXPECT_EQ(requests() - before, 0u);
    EXPECT_EQ(st.size, 5u);
    ASSERT_EQ(FleetApi(b).spit("f", "second, longer"), 0);
    ASSERT_EQ(a.fstat(fd, st), 0);
    EXPECT_EQ(st.size, 14u);
    ASSERT_EQ(b.utimens("/f", kTimeOmit, 12345), 0);
    ASSERT_EQ(a.fstat(fd, st), 0);
    EXPECT_EQ(st.mtime_ns, 12345u);
    ASSERT_EQ(b.chown("/f", 7, 8), 0);
    ASSERT_EQ(a.stat("/f", st), 0);
    EXPECT_EQ(st.uid, 7u);
    EXPECT_EQ(st.gid, 8u);
    ASSERT_EQ(b.unlink("/f"), 0);
    ASSERT_EQ(a.fstat(fd, st), 0);  // an orphan, still open here
    EXPECT_EQ(st.nlink, 0u);
    EXPECT_EQ(a.stat("/f", st), -ENOENT);
    ASSERT_EQ(a.close(fd), 0);
    EXPECT_GT(a.cached_attributes(), 0u);
  }));
}

// Hare's pfind sparse: a walker lists a directory and lstats each subdirectory before it lists
// that one. The listing brought the subdirectories' attributes and lookups, so the lstats cost
// nothing and each subdirectory costs its one DIRENT.
TEST(Fleet, AWalkersStatsOfSubdirectoriesComeWithTheListing) {
  FleetSim sim(one_server());
  constexpr int kDirectories = 40;
  ASSERT_TRUE(sim.run_one(0, [&](Client& a) {
    ASSERT_EQ(a.mkdir("/w", 0755), 0);
    for (int i = 0; i < kDirectories; ++i) {
      const std::string d = "/w/d" + std::to_string(i);
      ASSERT_EQ(a.mkdir(d, 0750), 0);
      ASSERT_EQ(FleetApi(a).spit(d.substr(1) + "/f", "x"), 0);
    }
  }));
  ASSERT_TRUE(sim.run_one(1, [&](Client& walker) {  // knows nothing of the tree yet
    auto requests = [&] { return requests_at(sim, 0); };
    std::vector<DirEntry> top;
    ASSERT_EQ(walker.readdir("/w", top), 0);
    ASSERT_EQ(top.size(), static_cast<std::size_t>(kDirectories));
    const std::uint64_t before = requests();
    for (const DirEntry& e : top) {
      FileStat st;
      ASSERT_EQ(walker.lstat("/w/" + e.name, st), 0);
      EXPECT_EQ(st.type, FileType::directory);
      EXPECT_EQ(st.mode, static_cast<std::uint32_t>(S_IFDIR | 0750));
      EXPECT_EQ(st.inode, e.inode);
      std::vector<DirEntry> inside;
      ASSERT_EQ(walker.readdir("/w/" + e.name, inside), 0);
      ASSERT_EQ(inside.size(), 1u);
    }
    EXPECT_EQ(requests() - before, static_cast<std::uint64_t>(kDirectories));  // one DIRENT each
  }));
}

// tar's calls for each file it extracts: open (O_EXCL), a write, futimens (atime omitted), fchown,
// fchmod, close. The open brings the first block and the times carry the write's end: 5 messages
// (4 waited for), where it took 7 (OPEN, BLOCKS, FLUSH, UTIMENS, CHOWN, CHMOD, CLOSE).
TEST(Fleet, AnExtractedFileTakesFiveMessages) {
  FleetSim sim(one_server());
  ASSERT_TRUE(sim.run_one(0, [&](Client& a) {
    auto requests = [&] { return requests_at(sim, 0); };
    const std::vector<std::byte> data(1000, std::byte{'t'});
    const std::uint64_t before = requests();
    const int fd = a.open("/x", O_WRONLY | O_CREAT | O_EXCL, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(a.write(fd, data), static_cast<ssize_t>(data.size()));
    ASSERT_EQ(a.futimens(fd, kTimeOmit, 1'700'000'000'000'000'000), 0);
    ASSERT_EQ(a.fchown(fd, 0, 0), 0);
    ASSERT_EQ(a.fchmod(fd, 0644), 0);
    ASSERT_EQ(a.close(fd), 0);
    EXPECT_EQ(requests() - before, 5u);
    FileStat st;
    ASSERT_EQ(sim.client(1).stat("/x", st), 0);
    EXPECT_EQ(st.size, data.size());
    EXPECT_EQ(st.mtime_ns, 1'700'000'000'000'000'000u);  // set after the write was published
    EXPECT_EQ(st.mode & 07777, 0644u);
    std::string back;
    ASSERT_EQ(FleetApi(sim.client(1)).slurp("x", back), 0);
    EXPECT_EQ(back, std::string(1000, 't'));
  }));
}

// fchmod, fchown and futimens change the file the descriptor names wherever it went: renamed, or
// unlinked and open only here (as Linux; by the path it was opened by they would miss it).
TEST(Fleet, DescriptorCallsReachTheFileAfterARenameOrAnUnlink) {
  for (const std::uint16_t servers : {1, 3}) {
    SimOptions options;
    options.servers = servers;
    FleetSim sim(options);
    ASSERT_TRUE(sim.run_one(0, [&](Client& a) {
      Client& b = sim.client(1);
      const std::vector<std::byte> data(10, std::byte{'r'});
      const int fd = a.open("/before", O_WRONLY | O_CREAT | O_EXCL, 0600);
      ASSERT_GE(fd, 0);
      ASSERT_EQ(a.write(fd, data), static_cast<ssize_t>(data.size()));
      ASSERT_EQ(b.rename("/before", "/after"), 0);
      ASSERT_EQ(a.fchmod(fd, 0640), 0);
      ASSERT_EQ(a.fchown(fd, 5, 6), 0);
      ASSERT_EQ(a.futimens(fd, 11, 22), 0);
      EXPECT_EQ(a.chmod("/before", 0600), -ENOENT);
      FileStat st;
      ASSERT_EQ(b.stat("/after", st), 0);
      EXPECT_EQ(st.mode & 07777, 0640u);
      EXPECT_EQ(st.uid, 5u);
      EXPECT_EQ(st.gid, 6u);
      EXPECT_EQ(st.atime_ns, 11u);
      EXPECT_EQ(st.mtime_ns, 22u);
      EXPECT_EQ(st.size, data.size());  // futimens published the write first

      ASSERT_EQ(b.unlink("/after"), 0);
      ASSERT_EQ(a.fchmod(fd, 0604), 0);
      ASSERT_EQ(a.fstat(fd, st), 0);
      EXPECT_EQ(st.mode & 07777, 0604u);
      EXPECT_EQ(st.nlink, 0u);
      ASSERT_EQ(a.close(fd), 0);
      EXPECT_EQ(a.fchmod(fd, 0600), -EBADF);
    }));
  }
}

TEST(Fleet, StaleLookupUnderConcurrentRenames) {
  for (std::uint64_t seed = 1; seed <= kSeeds / 3; ++seed) {
    SimOptions options;
    options.seed = seed;
    FleetSim sim(options);
    ASSERT_TRUE(sim.run_one(0, [&](Client& a) { ASSERT_EQ(FleetApi(a).spit("p0", "v"), 0); }));
    bool renamed = false;
    ASSERT_TRUE(sim.run({
        [&](Client& a) {
          for (int i = 0; i < 4; ++i) {
            ASSERT_EQ(a.rename("/p" + std::to_string(i), "/p" + std::to_string(i + 1)), 0);
          }
          renamed = true;
        },
        [&](Client& b) {
          FileStat st;
          for (int i = 0; i < 8; ++i) {
            int found = 0;
            // Newest name first: once /pk was seen, /p(k-2) was gone for good (the renames run
            // one after another), so seeing both would mean a stale cached lookup was used.
            for (int k = 4; k >= 0; --k) found += b.stat("/p" + std::to_string(k), st) == 0;
            EXPECT_LE(found, 2);
          }
        },
    }));
    ASSERT_TRUE(renamed);
    ASSERT_TRUE(sim.run_one(1, [&](Client& b) {
      FileStat st;
      for (int k = 0; k < 4; ++k) EXPECT_EQ(b.stat("/p" + std::to_string(k), st), -ENOENT) << k;
      EXPECT_EQ(b.stat("/p4", st), 0);
    }));
  }
}

TEST(Fleet, RmdirRacingCreatesNeverLeavesAnEntryInARemovedDirectory) {
  std::uint64_t removed_total = 0;
  std::uint64_t refused_total = 0;
  for (std::uint64_t seed = 1; seed <= kSeeds; ++seed) {
    SimOptions options;
    options.seed = seed;
    FleetSim sim(options);
    InodeNumber directory = 0;
    ASSERT_TRUE(sim.run_one(0, [&](Client& a) {
      ASSERT_EQ(a.mkdir("/race", 0755, seed % 2 == 0), 0);
      FileStat st;
      ASSERT_EQ(a.stat("/race", st), 0);
      directory = st.inode;
    }));
    int rmdir_result = 1;
    std::vector<int> creates;
    ASSERT_TRUE(sim.run({
        [&](Client& a) {
          for (int attempt = 0; attempt < 3 && rmdir_result != 0; ++attempt) {
            rmdir_result = a.rmdir("/race");
            ASSERT_TRUE(rmdir_result == 0 || rmdir_result == -ENOTEMPTY) << rmdir_result;
            if (rmdir_result == -ENOTEMPTY) {
              std::vector<DirEntry> entries;
              ASSERT_EQ(a.readdir("/race", entries), 0);
              for (const DirEntry& e : entries) ASSERT_EQ(a.unlink("/race/" + e.name), 0);
            }
          }
        },
        [&](Client& b) {
          for (int i = 0; i < 3; ++i) {
            const int fd = b.open("/race/f" + std::to_string(i), O_CREAT | O_WRONLY);
            creates.push_back(fd >= 0 ? 0 : fd);
            if (fd >= 0) {
              EXPECT_EQ(b.close(fd), 0);
            }
          }
        },
    }));
    for (int rc : creates) EXPECT_TRUE(rc == 0 || rc == -ENOENT) << rc;
    if (rmdir_result == 0) {
      ++removed_total;
      for (ServerIndex s = 0; s < sim.servers(); ++s) {
        EXPECT_TRUE(sim.server(s).entries_of(directory).empty()) << "seed " << seed;
        EXPECT_FALSE(sim.server(s).marked(directory));
      }
      ASSERT_TRUE(sim.run_one(1, [&](Client& b) {
        FileStat st;
        EXPECT_EQ(b.stat("/race", st), -ENOENT);
        EXPECT_LT(b.open("/race/late", O_CREAT | O_WRONLY), 0);
      }));
    } else {
      ++refused_total;
    }
  }
  EXPECT_GT(removed_total, 0u);
}

TEST(Fleet, MalformedMessagesAreCountedAndDropped) {
  FleetSim sim(SimOptions{});
  std::mt19937_64 random(99);
  for (int i = 0; i < 3000; ++i) {
    Message chunk;
    chunk.kind = i % 3 == 0 ? MessageKind::data : kFsChunkKind;
    for (auto& byte : chunk.body) byte = static_cast<std::byte>(random());
    sim.inject(static_cast<ServerIndex>(i % 3), sim.client_id(i % 2), chunk);
  }
  EXPECT_GT(sim.malformed(), 2500u);
  ASSERT_TRUE(sim.run_one(0, [&](Client& client) {
    FleetApi api(client);
    ASSERT_EQ(api.spit("after", "still works"), 0);
    std::string out;
    ASSERT_EQ(api.slurp("after", out), 0);
    EXPECT_EQ(out, "still works");
  }));
}

}  // namespace
}  // namespace flotilla::fs::testing
