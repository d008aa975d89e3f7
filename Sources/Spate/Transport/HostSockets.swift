import CCurl
import Glibc
import Synchronization

/// The connections (sockets) the transfer loop has open, per host: libcurl opens and closes
/// every socket through the hooks below, so the count is exact, idle connections in libcurl's
/// cache included. Changed only on the loop thread; read from anywhere.
///
/// Why: a host that throttles gets a lower budget; its connections beyond the budget must
/// close (a server that counts connections sees them go), but closing one after every request
/// would open a new one for the next — churn that costs handshakes. With the count, only the
/// requests that find the host over its budget close their connection afterwards.
final class HostSockets: Sendable {
    private struct State {
        var hostOf: [Int32: String] = [:]
        var open: [String: Int] = [:]
        /// The most open at once, per host (bounded like `open`: one entry per host seen).
        var peak: [String: Int] = [:]
    }
    private let state = Mutex(State())

    /// Sockets open to `host` (`scheme://host:port`) now.
    func count(_ host: String) -> Int { state.withLock { $0.open[host] ?? 0 } }

    /// The most sockets that were open to `host` at once.
    func peak(_ host: String) -> Int { state.withLock { $0.peak[host] ?? 0 } }

    fileprivate func opened(_ fd: Int32, host: String) {
        state.withLock { s in
            s.hostOf[fd] = host
            s.open[host, default: 0] += 1
            s.peak[host] = max(s.peak[host] ?? 0, s.open[host]!)
        }
    }

    fileprivate func closed(_ fd: Int32) {
        state.withLock { s in
            guard let host = s.hostOf.removeValue(forKey: fd) else { return }
            let left = (s.open[host] ?? 1) - 1
            s.open[host] = left > 0 ? left : nil
        }
    }

    /// Installs the hooks on a transfer's easy handle; `context` identifies the transfer's host
    /// when libcurl opens a socket for it (`HostSockets.Opening`).
    func install(on easy: EasyHandle, opening: UnsafeMutableRawPointer) -> [CURLcode] {
        [
            spate_easy_setopt_opensocket_function(easy.raw, hostSocketOpen),
            easy.set(CURLOPT_OPENSOCKETDATA, pointer: opening),
            spate_easy_setopt_closesocket_function(easy.raw, hostSocketClose),
            // A connection outlives the transfer that opened it (libcurl's cache): its close
            // hook gets this object, which lives as long as the loop.
            easy.set(CURLOPT_CLOSESOCKETDATA, pointer: Unmanaged.passUnretained(self).toOpaque()),
        ]
    }

    /// What the open hook needs: the sockets' ledger and the transfer's host.
    final class Opening: Sendable {
        let sockets: HostSockets
        let host: String

        init(sockets: HostSockets, host: String) {
            self.sockets = sockets
            self.host = host
        }
    }
}

/// libcurl's open-socket hook: the socket libcurl would open (close-on-exec), counted.
private let hostSocketOpen: curl_opensocket_callback = { context, _, address in
    guard let context, let address else { return -1 }
    let opening = Unmanaged<HostSockets.Opening>.fromOpaque(context).takeUnretainedValue()
    let fd = socket(address.pointee.family, address.pointee.socktype | Int32(SOCK_CLOEXEC.rawValue), address.pointee.protocol)
    if fd >= 0 { opening.sockets.opened(fd, host: opening.host) }
    return fd
}

/// libcurl's close-socket hook.
private let hostSocketClose: curl_closesocket_callback = { context, fd in
    if let context { Unmanaged<HostSockets>.fromOpaque(context).takeUnretainedValue().closed(fd) }
    return close(fd)
}
