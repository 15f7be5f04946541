// The name fleet's messages on the real server: raw chunks (64-byte channel messages), and whole
// records of any content split into chunks as a peer splits them, from three senders, are
// reassembled (name::ChunkAssembler), and every message that comes out goes to a
// NameServer of a three-member fleet (NameServer::handle validates it) and to a snapshot decoder;
// time moves on between them so the server's timeouts and retries run too.
#include <array>
#include <cstring>
#include <optional>
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
    } else if (step % 8 >= 4) {
      // A whole record of any content, sent the way a peer sends one (encode_chunks), so the
      // server's handling is reached without the fuzzer first finding the chunk framing.
      NameMessage message{};
      const auto bytes = input.bytes(sizeof(NameMessage));
      if (!bytes.empty()) std::memcpy(&message, bytes.data(), bytes.size());
      std::array<Message, kMaxChunks> chunks;
      const std::size_t count = encode_chunks(message, step, chunks);
      std::optional<NameMessage> assembled;
      for (std::size_t i = 0; i < count; ++i) assembled = senders[step % 3].push(chunks[i]);
      if (assembled) {
        server.handle(*assembled, out);
        if (is_snapshot_kind(assembled->kind) && snapshot.feed(*assembled) != SnapshotDecoder::State::receiving) {
          snapshot.reset();
        }
      }
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
