// vsftpd as Debian ships it (standalone, privilege separation, isolate): its listener forks a
// session process that never touches the connection; that one forks the pre-login child, and after
// the login clones (a raw clone system call) the post-login child, uid ftp, chrooted where no /proc
// is. Passive data connections are accepted by the session process and passed to that child over a
// unix socket. A login, LIST, RETR and STOR in passive mode, from python's ftplib in the peer
// namespace, with SHA-256 checked both ways. The fixture, and FLOTILLA_APPS_TEST_SIDE=kernel (the
// same case on kernel sockets): tests/apps/apps_fixture.hpp.
#include <gtest/gtest.h>

#include <pwd.h>
#include <unistd.h>

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "apps/tcp_perf/perf_streams.hpp"
#include "tests/apps/apps_fixture.hpp"

namespace flotilla::testing {
namespace {

constexpr std::uint16_t kFtpPort = 2121;
constexpr const char* kVsftpd = "/usr/sbin/vsftpd";

// Logs in anonymously, lists, fetches data.bin, stores a file and fetches it back; prints what a
// test compares: "listed", then the SHA-256 of what RETR and the round trip through STOR gave.
constexpr const char* kClientScript =
    "import ftplib, hashlib, io, sys\n"
    "ftp = ftplib.FTP()\n"
    "ftp.connect(sys.argv[1], int(sys.argv[2]), timeout=30)\n"
    "ftp.login()\n"
    "ftp.set_pasv(True)\n"
    "names = []\n"
    "ftp.retrlines('LIST', names.append)\n"
    "if any(line.endswith(' data.bin') for line in names): print('listed')\n"
    "fetched = io.BytesIO()\n"
    "ftp.retrbinary('RETR data.bin', fetched.write)\n"
    "print('retr', hashlib.sha256(fetched.getvalue()).hexdigest())\n"
    "ftp.storbinary('STOR incoming/up.bin', io.BytesIO(fetched.getvalue()[::-1]))\n"
    "back = io.BytesIO()\n"
    "ftp.retrbinary('RETR incoming/up.bin', back.write)\n"
    "print('stor', hashlib.sha256(back.getvalue()[::-1]).hexdigest())\n"
    "ftp.quit()\n";

std::string sha256_of(const std::vector<std::byte>& bytes) {
  apps::Sha256 hash;
  hash.update(bytes);
  return hash.finish();
}

class Ftp : public AppsTest {};

TEST_F(Ftp, VsftpdServesLoginListRetrieveAndStoreInPassiveMode) {
  if (::access(kVsftpd, X_OK) != 0) GTEST_SKIP() << "vsftpd is not installed (./dev installs it)";
  if (::getpwnam("ftp") == nullptr) GTEST_SKIP() << "no ftp user (Debian's vsftpd package makes it)";
  // Debian's python: root's own (pyenv) may be out of the peer namespace's reach.
  if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "/usr/bin/python3 is not installed";
  // The listener, then per session its process and two children, each a seat.
  ASSERT_TRUE(start_apps({}, 16));
  // vsftpd becomes ftp and chroots into the root: every folder on the way must be open to it, and
  // the root not writable by it (vsftpd refuses a writable chroot).
  std::filesystem::permissions(folder_, std::filesystem::perms(0755));
  const std::filesystem::path root = file("ftp");
  std::filesystem::create_directories(root / "incoming");
  std::filesystem::permissions(root, std::filesystem::perms(0755));
  const passwd* ftp_user = ::getpwnam("ftp");
  ASSERT_EQ(::chown((root / "incoming").c_str(), ftp_user->pw_uid, ftp_user->pw_gid), 0);
  std::vector<std::byte> data(3 << 20);
  std::mt19937_64 random(14);
  for (std::byte& byte : data) byte = static_cast<std::byte>(random());
  std::ofstream(root / "data.bin", std::ios::binary)
      .write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  const std::filesystem::path config = file("vsftpd.conf");
  std::ofstream(config) << "listen=YES\nlisten_ipv6=NO\nlisten_address=" << app_address()
                        << "\nlisten_port=" << kFtpPort
                        << "\nanonymous_enable=YES\nlocal_enable=NO\nno_anon_password=YES\nanon_root=" << root.string()
                        << "\nwrite_enable=YES\nanon_upload_enable=YES\nanon_umask=022\n"
                           "pasv_enable=YES\npasv_min_port=30000\npasv_max_port=30010\npasv_address="
                        << app_address()
                        << "\nsecure_chroot_dir=/var/run/vsftpd/empty\nvsftpd_log_file=" << file("transfers.log").string()
                        << "\n";
  std::filesystem::create_directories("/var/run/vsftpd/empty");
  Program server(app_command({kVsftpd, config.string()}), file("vsftpd.log"));
  ASSERT_TRUE(wait_for_port(server, app_address(), kFtpPort)) << tail(server.output());
  const CommandOutcome client = run_shell(
      "timeout 60 " +
      shell_words(peer_command({"/usr/bin/python3", "-c", kClientScript, app_address(), std::to_string(kFtpPort)})) +
      " 2>&1");
  const std::string digest = sha256_of(data);
  EXPECT_EQ(client.exit_code, 0) << client.output << tail(server.output());
  EXPECT_EQ(client.output, "listed\nretr " + digest + "\nstor " + digest + "\n") << tail(server.output());
  EXPECT_TRUE(server.running()) << tail(server.output());
  EXPECT_EQ(server.output().find("flotilla:"), std::string::npos) << tail(server.output());
  expect_served_by_flotilla();
}

}  // namespace
}  // namespace flotilla::testing
