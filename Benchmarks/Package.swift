// swift-tools-version:6.1
import PackageDescription

// The package-benchmark suite. Run from this folder:
//   swift package --allow-writing-to-package-directory benchmark
// Thresholds live in Thresholds/; see README "Benchmarks".
//
// The parent package is reached through the `spate` symlink (-> ..) so its identity is always
// "spate", whatever the clone's folder is called.
let package = Package(
    name: "SpateBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: "spate"),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.0", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "SpateBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "Spate", package: "spate"),
                .product(name: "SpateTestServer", package: "spate"),
            ],
            path: "Benchmarks/SpateBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]),
    ]
)
