// swift-tools-version:6.0
import Foundation
import PackageDescription

let package = Package(
    name: "Relay",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "relay", targets: ["RelayCommand"]),
    ],
    targets: [
        // System libraries: module.modulemap + shim.h, found with pkg-config, installed from Debian packages.
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CMicroHTTPD", pkgConfig: "libmicrohttpd", providers: [.apt(["libmicrohttpd-dev"])]),
        // joyent/nodejs http-parser (Debian ships no .pc file): the webhook listener's own epoll loop parses with it.
        .systemLibrary(name: "CHTTPParser", providers: [.apt(["libhttp-parser-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CPostgres", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),

        .target(name: "Crypto", dependencies: ["COpenSSL"]),
        // The engine: no SQL. Storage is behind the protocols of Sources/Relay/Store/Store.swift.
        .target(name: "Relay", dependencies: ["Crypto", "CCurl", "CMicroHTTPD", "CHTTPParser"]),
        // The stores: the only targets that import a database's C library.
        .target(name: "RelaySQLite", dependencies: ["Relay", "Crypto", "CSQLite"]),
        .target(name: "RelayPostgres", dependencies: ["Relay", "Crypto", "CPostgres"]),
        // The stand-ins of `relay simulate`: a recording sink with faults, a token endpoint; the providers' own
        // stand-ins (in Adapters) are built on it. Nothing in the engine uses it.
        .target(name: "Simulator", dependencies: ["Relay", "Crypto"]),
        .target(name: "Adapters", dependencies: ["Relay", "Crypto", "Simulator"]),
        .executableTarget(name: "RelayCommand", dependencies: ["Relay", "RelaySQLite", "RelayPostgres", "Adapters", "Simulator"]),

        .testTarget(name: "CryptoTests", dependencies: ["Crypto"]),
        .testTarget(name: "RelayTests", dependencies: ["Relay", "RelaySQLite", "RelayPostgres", "Adapters", "Simulator", "Crypto"]),
    ],
    swiftLanguageModes: [.v6]
)

// The libFuzzer targets (Fuzz/, docs/fuzzing.md): declared only when RELAY_FUZZ is set, as `make fuzz` and
// `make fuzz-smoke` do, which build them with `-sanitize=fuzzer,address` in their own build path (.build-fuzz/).
// A plain `swift build`, `swift test` or `make run` never sees them (they link only against libFuzzer).
if ProcessInfo.processInfo.environment["RELAY_FUZZ"] != nil {
    package.targets += [
        // LLVMFuzzerRunDriver, libFuzzer's entry point for a program with its own main.
        .systemLibrary(name: "CFuzzer", path: "Fuzz/Support/CFuzzer"),
        .target(name: "FuzzSupport", dependencies: ["CFuzzer", "Relay", "Adapters", "Crypto"], path: "Fuzz/Support/FuzzSupport"),
    ]
    for name in ["FuzzJSON", "FuzzForm", "FuzzJSON5", "FuzzTemplate", "FuzzSignatures", "FuzzHTTP"] {
        package.targets.append(.executableTarget(name: name, dependencies: ["FuzzSupport", "Relay", "Adapters", "Crypto"],
                                                 path: "Fuzz/Targets/\(name)"))
    }
}
