import CCurl
import Glibc

/// How one transfer ended, as a type. Every decision after a transfer (retry, fresh connection,
/// throttle, resolve the URL again, stop) is made by `FailurePolicy` from this value, never from
/// the wording of a message; the messages inside are only for people.
enum TransferEnd: Sendable, Equatable {
    /// The reply ran to its natural end. (A range sink turns a reply that ended early into
    /// `.invalidReply(.shortReply)`.)
    case completed
    /// The sink had everything it wanted and stopped the transfer: a probe's head, or a range
    /// that reached the new end a steal gave it.
    case enough
    /// Another request made this one unnecessary (a hedge's loser, `CurlLoop.abandon`).
    case abandoned
    /// The stall watchdog cut the transfer: less than the limit's speed over its window.
    case stalled(StallWatchdog.Limit)
    /// No usable reply: connect, DNS, TLS, reset, timeout (libcurl's code).
    case transport(TransportFailure)
    /// An HTTP status other than the one asked for.
    case status(StatusReply)
    /// The reply broke the rules of the request it answers.
    case invalidReply(InvalidReply)
    /// The reply describes another version of the file (size or validator).
    case remoteChanged(String)
    /// Writing the received bytes failed on this machine (disk full, I/O error).
    case localFailure(SpateError)
}

extension TransferEnd {
    /// Whether the stall watchdog cut the transfer.
    var isStall: Bool {
        if case .stalled = self { return true }
        return false
    }

    /// The end as an error, for messages (retry notices, the final error).
    var error: SpateError {
        switch self {
        case .completed, .enough, .abandoned: SpateError(.network, "the transfer ended early (internal error)")
        case .stalled(let limit): SpateError(.network, "stalled: \(limit.description)")
        case .transport(let failure): failure.error
        case .status(let reply): reply.error
        case .invalidReply(let reply): reply.error
        case .remoteChanged(let why): .remoteChanged(why)
        case .localFailure(let error): error
        }
    }
}

/// A libcurl failure with no usable reply.
struct TransportFailure: Sendable, Equatable {
    /// libcurl's `CURLcode`.
    let code: UInt32
    /// One line, naming the host and port; URLs in libcurl's text are redacted.
    let message: String
    /// The system's error of a failed connect (`CURLINFO_OS_ERRNO`; 0 when not known).
    var osErrno: Int32 = 0

    /// A connect timeout or libcurl's own low-speed timeout: the path, not the request, failed.
    var isTimeout: Bool { code == CURLE_OPERATION_TIMEDOUT.rawValue }

    /// The host could not be reached at all: no address for its name, or a connect the network
    /// refused (`ECONNREFUSED`, `EHOSTUNREACH`, `ENETUNREACH`, or the kernel's own connect
    /// timeout). Not a failure of this machine (`EMFILE`, `EADDRNOTAVAIL`: libcurl reports
    /// those as failures to connect too), and not libcurl's timeouts, resets or TLS failures,
    /// which a host that is up and busy causes (`HostOutages`).
    var isUnreachable: Bool {
        if code == CURLE_COULDNT_RESOLVE_HOST.rawValue { return true }
        guard code == CURLE_COULDNT_CONNECT.rawValue else { return false }
        return [ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, ETIMEDOUT].contains(osErrno)
    }

    /// TLS trust problems and local setup errors: trying again cannot help.
    var isPermanent: Bool { Self.permanentCodes.contains(code) }

    static let permanentCodes: Set<UInt32> = [
        CURLE_UNSUPPORTED_PROTOCOL.rawValue, CURLE_URL_MALFORMAT.rawValue, CURLE_OUT_OF_MEMORY.rawValue,
        CURLE_PEER_FAILED_VERIFICATION.rawValue, CURLE_SSL_CACERT_BADFILE.rawValue,
        CURLE_SSL_CERTPROBLEM.rawValue, CURLE_SSL_ISSUER_ERROR.rawValue,
    ]

    init(code: UInt32, message: String) {
        self.code = code
        self.message = message
    }

    /// From libcurl's code and text, for a request to `url`.
    init(code: UInt32, curlMessage: String, url: RemoteURL, osErrno: Int32 = 0) {
        var text = curlMessage.isEmpty ? "transfer failed" : curlMessage
        if code == CURLE_OPERATION_TIMEDOUT.rawValue { text = "timed out: \(text)" }
        if code == CURLE_PEER_FAILED_VERIFICATION.rawValue { text += " (use --cacert PATH to trust a private CA)" }
        self.init(code: code, message: "\(url.host):\(url.port): \(Redactor.urls(in: text))")
        self.osErrno = osErrno
    }

    /// CA certificates libcurl cannot load are this machine's problem, not the network's:
    /// a `--cacert` file or the system's bundle (exit 6).
    var error: SpateError {
        code == CURLE_SSL_CACERT_BADFILE.rawValue
            ? SpateError(.localIO, "cannot use the CA certificates (the --cacert file, or the system's bundle): \(message)")
            : SpateError(.network, message)
    }
}

/// An HTTP error status, with what the failure policy needs from the reply.
struct StatusReply: Sendable, Equatable {
    let status: Int
    /// The server's `Retry-After`, as a wait from the moment the reply arrived.
    let retryAfter: Duration?
    /// One line: the status, its reason, the redacted URL and the start of the body.
    let message: String

    init(status: Int, retryAfter: Duration?, message: String) {
        self.status = status
        self.retryAfter = retryAfter
        self.message = message
    }

    /// From a reply head and the start of its body, for a request to `url`.
    init(head: ResponseHead, body: ErrorBody, url: RemoteURL, wallSeconds: Int64) {
        var message = "HTTP \(head.status)"
        let reason = HTTPStatus.reasonPhrase(head.status)
        if let reason { message += " \(reason)" }
        message += " from \(url.redacted)"
        let detail = Redactor.urls(in: body.summary())  // an error body may echo a signed URL
        // A stock error page's title only repeats the status line ("404 Not Found").
        let repeatsStatus = [reason, reason.map { "\(head.status) \($0)" }, "\(head.status)"]
            .contains { $0?.lowercased() == detail.lowercased() }
        if !detail.isEmpty && !repeatsStatus { message += ": \(detail)" }
        self.init(status: head.status, retryAfter: RetryAfter.parse(head["retry-after"], now: wallSeconds), message: message)
    }

    var error: SpateError { SpateError(.http, message, httpStatus: status) }
}

/// A reply that breaks the rules of the request it answers (RELIABILITY A1–A12).
struct InvalidReply: Sendable, Equatable {
    enum Kind: Sendable, Equatable {
        /// 200 with the whole body for a range request.
        case ignoredRange
        /// 200 with the whole body, and the probe's validator, for a range request with
        /// `If-Range`: the server judged the validator weak (`IfRangeSwitch`).
        case ifRangeIgnored
        /// A 206 for other bytes than asked, or a malformed or missing Content-Range.
        case wrongRange
        /// Content-Encoding other than identity.
        case encoded
        /// multipart/byteranges for a single range.
        case multipart
        /// Content-Length disagrees with the range or the announced size.
        case wrongLength
        /// More bytes than asked for or announced.
        case tooManyBytes
        /// The reply ended (without an error) before its last byte.
        case shortReply
        /// A status that makes no sense for the request (1xx/2xx other than expected, 416).
        case unexpectedStatus
        /// A header line that cannot be parsed, or headers beyond the bounds.
        case malformedHead
    }

    let kind: Kind
    let message: String

    init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    var error: SpateError { .invalidResponse(message) }
}

/// Reason phrases for the statuses spate reports most.
enum HTTPStatus {
    static func reasonPhrase(_ status: Int) -> String? {
        switch status {
        case 202: "Accepted"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 408: "Request Timeout"
        case 410: "Gone"
        case 416: "Range Not Satisfiable"
        case 425: "Too Early"
        case 429: "Too Many Requests"
        case 500: "Internal Server Error"
        case 501: "Not Implemented"
        case 502: "Bad Gateway"
        case 503: "Service Unavailable"
        case 504: "Gateway Timeout"
        default: nil
        }
    }
}

extension TransferOutcome {
    /// The typed end of a transfer whose sink kept `errorStatus` (an HTTP error reply) and the
    /// start of its body. An error status wins over a transport failure that followed it.
    func end(errorStatus: Int?, errorBody: ErrorBody, url: RemoteURL, wallSeconds: Int64) -> TransferEnd {
        if let head, errorStatus != nil {
            return .status(StatusReply(head: head, body: errorBody, url: url, wallSeconds: wallSeconds))
        }
        if let stop {
            switch stop {
            case .enough, .handOver: return .enough
            case .abandoned: return .abandoned
            case .stalled(let limit): return .stalled(limit)
            case .invalid(let reply): return .invalidReply(reply)
            case .remoteChanged(let why): return .remoteChanged(why)
            case .localFailure(let error): return .localFailure(error)
            }
        }
        if let reply = Self.malformedReply(curlCode: curlCode, curlMessage: curlMessage, headComplete: head != nil, url: url) {
            return .invalidReply(reply)
        }
        if curlCode != 0 || head == nil {
            return .transport(TransportFailure(code: curlCode, curlMessage: curlMessage, url: url, osErrno: osErrno))
        }
        return .completed
    }
}

extension TransferOutcome {
    /// libcurl codes that mean the server's reply broke HTTP, not that the network failed:
    /// an invalid reply (exit 8), so scripts that retry on exit 3 do not loop on a broken server.
    ///
    /// - `CURLE_WEIRD_SERVER_REPLY`: a malformed status line or header (`Content-Length: abc`,
    ///   `-1`, two different lengths).
    /// - `CURLE_UNSUPPORTED_PROTOCOL` during a transfer: the reply was not HTTP/1.x (an
    ///   HTTP/0.9 reply). spate's URLs are checked to be http(s) before any request, and
    ///   redirects are followed by spate, so this code has no other cause here.
    /// - `CURLE_OUT_OF_MEMORY` before a complete head, `CURLE_TOO_LARGE` (libcurl 8.6+): a
    ///   reply header over libcurl's 100 KiB limit (libcurl 7.x reports it as out of memory).
    static func malformedReply(curlCode: UInt32, curlMessage: String, headComplete: Bool, url: RemoteURL) -> InvalidReply? {
        let tooLarge: UInt32 = 100  // CURLE_TOO_LARGE, absent from older headers
        var origin: String { "\(url.host):\(url.port)" }  // only for a failure: not built per reply
        switch curlCode {
        case CURLE_WEIRD_SERVER_REPLY.rawValue:
            return InvalidReply(.malformedHead, "\(origin): malformed reply: \(Redactor.urls(in: curlMessage))")
        case CURLE_UNSUPPORTED_PROTOCOL.rawValue:
            return InvalidReply(.malformedHead, "\(origin): the reply is not HTTP/1.x (\(Redactor.urls(in: curlMessage)))")
        case CURLE_OUT_OF_MEMORY.rawValue where !headComplete, tooLarge:
            return InvalidReply(.malformedHead, "\(origin): the reply's header is too large (over 100 KiB)")
        default:
            return nil
        }
    }
}
