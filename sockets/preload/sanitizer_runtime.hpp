// What LD_PRELOAD names to load libflotilla-preload.so, which a sanitized build (./dev test
// --sanitize) makes depend on the AddressSanitizer runtime. GCC links that runtime as a shared
// library that refuses to start unless it comes first in the program's library list ("ASan runtime
// does not come first in initial library list"), and an unmodified program (redis, nginx) does not
// link it at all: whatever preloads the library names the runtime first, and the program then runs
// on the sanitizers' allocator, so the library's checks hold in it too.
#pragma once

#include <dlfcn.h>
#include <link.h>

#include <string>

namespace flotilla::preload {

// The path of the shared AddressSanitizer runtime this code was built against and runs on; "" in
// a build without ASan, or with the runtime linked into the program itself (clang's default).
inline std::string sanitizer_runtime() {
#if defined(__SANITIZE_ADDRESS__)
  void* const entry = ::dlsym(RTLD_DEFAULT, "__asan_init");
  Dl_info info{};
  link_map* object = nullptr;
  // The program's own entry in the list of loaded objects has an empty name.
  if (entry != nullptr && ::dladdr1(entry, &info, reinterpret_cast<void**>(&object), RTLD_DL_LINKMAP) != 0 &&
      object != nullptr && object->l_name != nullptr && *object->l_name != '\0') {
    return object->l_name;
  }
#endif
  return {};
}

// The LD_PRELOAD list that loads `library`: the sanitizer runtime first when there is one.
inline std::string preload_list(const std::string& library) {
  const std::string runtime = sanitizer_runtime();
  return runtime.empty() ? library : runtime + ":" + library;
}

}  // namespace flotilla::preload
