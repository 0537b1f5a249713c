# Pinned llama.cpp, placed by scripts/setup.sh. Refuse any other commit.
set(MODELD_LLAMA_DIR "${PROJECT_SOURCE_DIR}/third_party/llama.cpp" CACHE PATH "verified llama.cpp tree")
set(MODELD_LLAMA_COMMIT "de3ff815ea7d559ee917f063901b8986f038abc6")

if(NOT EXISTS "${MODELD_LLAMA_DIR}/CMakeLists.txt")
  message(FATAL_ERROR "llama.cpp not found at ${MODELD_LLAMA_DIR}: run scripts/setup.sh")
endif()
execute_process(COMMAND git -C "${MODELD_LLAMA_DIR}" rev-parse HEAD
                OUTPUT_VARIABLE _llama_head OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0 OR NOT _llama_head STREQUAL MODELD_LLAMA_COMMIT)
  message(FATAL_ERROR "llama.cpp at ${MODELD_LLAMA_DIR} is at '${_llama_head}', expected ${MODELD_LLAMA_COMMIT}: run scripts/setup.sh")
endif()

# Build only what we link: ggml, ggml-cpu, libllama, and llama-common (chat templates, tool-call
# parsing, grammars, sampling) with the vendored cpp-httplib it brings.
set(BUILD_SHARED_LIBS OFF CACHE BOOL "" FORCE)
set(LLAMA_BUILD_COMMON ON CACHE BOOL "" FORCE)
set(LLAMA_BUILD_TESTS OFF CACHE BOOL "" FORCE)
set(LLAMA_BUILD_TOOLS OFF CACHE BOOL "" FORCE)
set(LLAMA_BUILD_EXAMPLES OFF CACHE BOOL "" FORCE)
set(LLAMA_BUILD_SERVER OFF CACHE BOOL "" FORCE)
set(LLAMA_BUILD_APP OFF CACHE BOOL "" FORCE)
set(LLAMA_CURL OFF CACHE BOOL "" FORCE)
set(LLAMA_OPENSSL OFF CACHE BOOL "" FORCE)
set(LLAMA_ALL_WARNINGS OFF CACHE BOOL "" FORCE)
set(GGML_BUILD_TESTS OFF CACHE BOOL "" FORCE)
# No OpenMP: libgomp keeps one thread team per calling thread, and once a process holds more
# team threads than cores (the daemon computes on whichever worker thread serves a request)
# every barrier falls back to futex sleeps: decode ran ~25% slower. ggml's own threadpool,
# one per session (see LlamaSession::Open), is tied to no calling thread.
set(GGML_OPENMP OFF CACHE BOOL "" FORCE)
set(GGML_BUILD_EXAMPLES OFF CACHE BOOL "" FORCE)
add_subdirectory("${MODELD_LLAMA_DIR}" "${CMAKE_BINARY_DIR}/llama.cpp" EXCLUDE_FROM_ALL SYSTEM)
# modeld's listeners take bursts of connections: a deeper accept queue than llama-server's 512.
target_compile_definitions(cpp-httplib PRIVATE CPPHTTPLIB_LISTEN_BACKLOG=1024)
