// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "spate",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Spate", targets: ["Spate"]),
        .executable(name: "spate", targets: ["SpateCLI"]),
        .library(name: "SpateTestServer", targets: ["SpateTestServer"]),
        .executable(name: "spate-test-server", targets: ["SpateTestServerMain"]),
        .executable(name: "spate-soak", targets: ["SpateSoak"]),
        .executable(name: "spate-fuzz", targets: ["SpateFuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
    ],
    targets: [
        // System libraries: typed shims over libcurl, liblz4 and OpenSSL's libcrypto.
        .systemLibrary(
            name: "CCurl", pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"]), .brew(["curl"])]),
        .systemLibrary(
            name: "CLZ4", pkgConfig: "liblz4",
            providers: [.apt(["liblz4-dev"]), .brew(["lz4"])]),
        .systemLibrary(
            name: "CCrypto", pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"]), .brew(["openssl"])]),
        .systemLibrary(
            name: "CZlib", pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"]), .brew(["zlib"])]),
        .systemLibrary(
            name: "CISAL", pkgConfig: "libisal",
            providers: [.apt(["libisal-dev"]), .brew(["isa-l"])]),

        // Linux calls Swift's Glibc module does not import (sync_file_range, thread names).
        .target(name: "CSpateSystem"),

        // The engine library that programs embed.
        .target(name: "Spate", dependencies: ["CCurl", "CLZ4", "CCrypto", "CZlib", "CISAL", "CSpateSystem"]),

        // The `spate` command.
        .executableTarget(
            name: "SpateCLI",
            dependencies: [
                "Spate",
                "CSpateSystem",
                "SpateTestContent",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),

        // Deterministic generated content, shared by the test server, the tests and benchmarks.
        .target(name: "SpateTestContent", dependencies: ["Spate"]),

        // A programmable HTTP/1.1 loopback server with fault injection (tests, benchmarks, demo).
        .target(
            name: "SpateTestServer",
            dependencies: [
                "Spate",
                "SpateTestContent",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]),
        .executableTarget(
            name: "SpateTestServerMain",
            dependencies: [
                "SpateTestServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),

        // The long chaos run (`swift run -c release spate-soak`), kept out of `swift test`.
        .executableTarget(
            name: "SpateSoak",
            dependencies: [
                "SpateTestServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),

        // Fuzz targets over the parsers of untrusted input (`scripts/fuzz TARGET SECONDS`).
        .executableTarget(name: "SpateFuzz", dependencies: ["Spate"]),

        .testTarget(
            name: "SpateTests",
            dependencies: ["Spate", "SpateTestServer", "SpateTestContent", "SpateCLI", "SpateTestServerMain"]),
    ],
    swiftLanguageModes: [.v6]
)
