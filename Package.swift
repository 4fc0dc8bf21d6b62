// swift-tools-version:6.0
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
        .systemLibrary(name: "COpenSSL", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),

        .target(name: "Crypto", dependencies: ["COpenSSL"]),
        .target(name: "Relay", dependencies: ["Crypto", "CCurl", "CMicroHTTPD", "CSQLite"]),
        .target(name: "Adapters", dependencies: ["Relay", "Crypto"]),
        .executableTarget(name: "RelayCommand", dependencies: ["Relay", "Adapters"]),

        .testTarget(name: "CryptoTests", dependencies: ["Crypto"]),
        .testTarget(name: "RelayTests", dependencies: ["Relay", "Adapters", "Crypto"]),
    ],
    swiftLanguageModes: [.v6]
)
