import Glibc
import Spate

/// The `spate-test-server` process started for the demo.
///
/// It is given a pipe as standard input and exits when that pipe closes, so it cannot outlive
/// `spate` even if `spate` is killed.
final class BundledServer: Sendable {
    let pid: pid_t
    let url: String
    private let stdinWrite: Int32

    private init(pid: pid_t, url: String, stdinWrite: Int32) {
        self.pid = pid
        self.url = url
        self.stdinWrite = stdinWrite
    }

    /// The server executable beside this one (`swift build` puts every product in one folder).
    static func executablePath() -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        let me = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let candidate = FilePaths.directory(of: me) + "/spate-test-server"
        return access(candidate, X_OK) == 0 ? candidate : nil
    }

    static func start(arguments: [String]) throws(SpateError) -> BundledServer {
        guard let path = executablePath() else {
            throw SpateError(.localIO, "the bundled server spate-test-server is not next to spate; build it: swift build -c release --product spate-test-server")
        }
        var toChild: [Int32] = [0, 0], fromChild: [Int32] = [0, 0]
        guard pipe(&toChild) == 0, pipe(&fromChild) == 0 else {
            throw SpateError(.localIO, "pipe: \(String(cString: strerror(errno)))")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, toChild[0], 0)
        posix_spawn_file_actions_adddup2(&actions, fromChild[1], 1)
        posix_spawn_file_actions_addclose(&actions, toChild[1])
        posix_spawn_file_actions_addclose(&actions, fromChild[0])

        let argv = [path] + arguments
        var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, nil, &cArgs, environ)
        close(toChild[0])
        close(fromChild[1])
        guard rc == 0 else {
            close(toChild[1]); close(fromChild[0])
            throw SpateError(.localIO, "cannot start \(path): \(String(cString: strerror(rc)))")
        }
        // The first line on its stdout is the URL it serves.
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while line.count < 1024 {
            let n = read(fromChild[0], &byte, 1)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 || byte == UInt8(ascii: "\n") { break }
            line.append(byte)
        }
        close(fromChild[0])
        let url = String(decoding: line, as: UTF8.self)
        let server = BundledServer(pid: pid, url: url, stdinWrite: toChild[1])
        guard url.hasPrefix("http://") else {
            server.stop()
            throw SpateError(.localIO, "the bundled server did not start (it printed \"\(url.prefix(80))\")")
        }
        return server
    }

    /// Closes the server's stdin (it exits) and reaps it.
    func stop() {
        close(stdinWrite)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }
}
