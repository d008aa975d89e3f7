@_spi(Fuzzing) import Spate
import Glibc

// One executable for every fuzz target: `SPATE_FUZZ_TARGET` picks the parser
// (`FuzzTargets.names`). Built with `-sanitize=fuzzer,address -DFUZZING` by `scripts/fuzz`,
// libFuzzer drives it; built plainly, it replays files (a corpus, a crash) through a target.

/// Writes to standard error (fd 2; the C `stderr` global is not concurrency-safe in Swift 6).
func say(_ text: String) {
    var text = text
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

#if FUZZING
nonisolated(unsafe) private var target = ""

@_cdecl("LLVMFuzzerInitialize")
public func fuzzerInitialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    guard target.isEmpty else { return 0 }
    target = getenv("SPATE_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    guard FuzzTargets.names.contains(target) else {
        say("set SPATE_FUZZ_TARGET to one of: \(FuzzTargets.names.joined(separator: " "))\n")
        exit(2)
    }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    _ = FuzzTargets.run(target, UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

/// libFuzzer's driver, for an executable whose `main` is not libFuzzer's.
@_silgen_name("LLVMFuzzerRunDriver")
func fuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                     _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// SwiftPM links an executable target's entry point under this name (so tests can link the
/// module); it takes the place of libFuzzer's own `main` and hands over to its driver.
@_cdecl("SpateFuzz_main")
public func spateFuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var arguments = argv
    _ = fuzzerInitialize(&count, &arguments)
    return fuzzerRunDriver(&count, &arguments) { data, size in fuzzerTestOneInput(data, size) }
}
#else
@main
enum FuzzReplay {
    /// `spate-fuzz TARGET FILE...`: runs each file through the target (no fuzzing).
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        guard let name = arguments.first, FuzzTargets.names.contains(name) else {
            say("usage: spate-fuzz TARGET FILE...  (TARGET: \(FuzzTargets.names.joined(separator: " ")))\n")
            exit(2)
        }
        for path in arguments.dropFirst() {
            guard let bytes = readFile(path) else {
                say("cannot read \(path)\n")
                exit(1)
            }
            _ = bytes.withUnsafeBytes { FuzzTargets.run(name, $0) }
        }
        print("\(name): \(arguments.count - 1) inputs, no crash")
    }

    static func readFile(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { return nil }
            if n == 0 { return bytes }
            bytes += chunk[0..<n]
        }
    }
}
#endif
