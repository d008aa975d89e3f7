import Glibc
import Spate
import SpateTestContent

/// `spate` with no URL: starts the bundled loopback server (`spate-test-server`, built beside
/// `spate`), serves a generated file, downloads it with the given options, verifies its SHA-256
/// and prints the throughput.
///
/// The server runs as a separate process so the download is measured as it would be against any
/// server (and so `spate`'s own memory use is not mixed with the server's).
struct DemoJob: Sendable {
    static let seed: UInt64 = 20_261_122
    static let fileName = "spate-demo.bin"

    let options: DownloadOptions
    let output: String?
    let quiet: Bool
    let size: Int64

    init(output: String?, options: DownloadOptions, quiet: Bool, sizeText: String) throws(SpateError) {
        guard let size = ByteSize.parse(sizeText) else {
            throw SpateError(.usage, "invalid --demo-size \"\(sizeText)\": use a size like 1G or 256M")
        }
        if options.checksum != nil {
            throw SpateError(.usage, "--checksum cannot be used without a URL: the demo computes its own")
        }
        if let output, FilePaths.exists(output), !options.overwrite {
            throw SpateError(.localIO, "\(output) already exists; use --force to replace it")
        }
        self.options = options
        self.output = output
        self.quiet = quiet
        self.size = size
    }

    func run() async throws(SpateError) {
        let server = try BundledServer.start(arguments: [
            "--port", "0", "--exit-on-stdin-eof", "--file", "/\(Self.fileName):\(size):\(Self.seed)",
        ])
        defer { server.stop() }

        Console.note("demo: \(ByteSize.format(size)) of generated data on the bundled loopback server \(server.url)")
        let expected = DemoJob.expectedSHA256(size: size)
        let checksum = try Checksum(algorithm: .sha256, digest: expected)

        var options = self.options
        options.checksum = checksum
        // The bundled server is on loopback: a proxy from the environment (libcurl does not
        // skip loopback addresses for one) would carry the demo's requests elsewhere.
        if options.proxy == nil { options.proxy = "" }
        let directory: String?
        let path: String
        if let output {
            path = output
            directory = nil
        } else {
            directory = try TemporaryDirectory.make(prefix: "spate-demo")
            path = directory! + "/" + Self.fileName
        }
        defer {
            if let directory {
                _ = unlink(path)
                _ = rmdir(directory)
            }
        }
        let download = try Download(url: server.url, to: path, options: options)
        let result = try await DownloadJob.run(download, quiet: quiet)
        Console.note("demo: downloaded \(ByteSize.format(result.bytes)) in \(ProgressRenderer.seconds(result.elapsed.secondsDouble)): "
            + "\(ByteSize.formatRate(result.bytesPerSecond)) with \(result.connections) connections, "
            + "sha256 \(checksum.hex.prefix(16))… verified\(directory == nil ? ", saved to \(path)" : "")")
    }

    /// SHA-256 of the generated content, computed locally (about 1 s per GiB).
    static func expectedSHA256(size: Int64) -> [UInt8] {
        GeneratedContent(seed: seed, size: size).digest(.sha256)
    }
}

/// A private directory under $TMPDIR (or /tmp).
enum TemporaryDirectory {
    static func make(prefix: String) throws(SpateError) -> String {
        let base = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        var template = Array("\(base)/\(prefix)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard made != nil else {
            throw SpateError(.localIO, "cannot create a temporary directory in \(base): \(String(cString: strerror(errno)))")
        }
        return template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}
