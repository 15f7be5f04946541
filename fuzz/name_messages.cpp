// The name fleet's messages on the real server: chunks (64-byte channel messages) from three
// senders are reassembled (name::ChunkAssembler), and every message that comes out goes to a
// NameServer of a three-member fleet (NameServer::handle validates it) and to a snapshot decoder;
// time moves on between them so the server's timeouts and retries run too.
#include <array>
#include <cstring>
#include <vector>

#include "components/name/arbitrated_commit.hpp"
#include "components/name/name_message.hpp"
#include "components/name/snapshot_stream.hpp"
#include "fuzz/fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace flotilla;
  using namespace flotilla::name;
  fuzz::FuzzInput input(data, size);
  ServerConfig config;
  config.self = 0;
  NameServer server(config, {0, 1, 2});
  std::array<ChunkAssembler, 3> senders;
  SnapshotDecoder snapshot;
  std::vector<Envelope> out;
  std::uint64_t now_ms = 1;
  while (!input.empty()) {
    const std::uint8_t step = input.byte();
    if (step % 8 == 7) {
      now_ms += input.take<std::uint16_t>();
      server.tick(now_ms, out);
    } else {
      Message chunk{};
      // Mostly the name fleet's own kind, so the assembler takes it.
      chunk.kind = step % 8 == 6 ? static_cast<MessageKind>(input.take<std::uint16_t>()) : kNameChunkKind;
      const auto body = input.bytes(Message::kBodyBytes);
      if (!body.empty()) std::memcpy(chunk.body.data(), body.data(), body.size());
      if (auto message = senders[step % 3].push(chunk)) {
        server.handle(*message, out);
        if (is_snapshot_kind(message->kind) && snapshot.feed(*message) != SnapshotDecoder::State::receiving) {
          snapshot.reset();
        }
      }
    }
    out.clear();
  }
  return 0;
}
