import CCurl
import Glibc

/// Turns a failed transfer into a verdict: the error to report (one line, no secrets) and
/// whether a retry can help. Pure functions of the outcome, tested without I/O.
enum FailureClassifier {
    /// libcurl's code for a connect timeout or a stall (the low-speed watchdog).
    static let timeoutCode = CURLE_OPERATION_TIMEDOUT.rawValue

    /// libcurl failures that retrying cannot fix: TLS trust problems and local setup errors.
    static let permanentCurlCodes: Set<UInt32> = [
        CURLE_UNSUPPORTED_PROTOCOL.rawValue, CURLE_URL_MALFORMAT.rawValue, CURLE_OUT_OF_MEMORY.rawValue,
        CURLE_PEER_FAILED_VERIFICATION.rawValue, CURLE_SSL_CACERT_BADFILE.rawValue,
        CURLE_SSL_CERTPROBLEM.rawValue, CURLE_SSL_ISSUER_ERROR.rawValue,
    ]

    /// Whether the outcome is the stall watchdog's (or a libcurl timeout).
    static func isStall(_ outcome: TransferOutcome) -> Bool {
        if outcome.curlCode == timeoutCode { return true }
        if case .failed(let error) = outcome.stop, error.kind == .network, error.message.hasPrefix("stalled") { return true }
        return false
    }

    /// No usable response head: a connection, TLS or protocol failure.
    static func transportFailure(_ outcome: TransferOutcome, url: RemoteURL) -> FailureVerdict {
        if case .failed(let error) = outcome.stop {
            return FailureVerdict(error: error, retryable: isRetryable(error))
        }
        let code = outcome.curlCode
        var message = outcome.curlMessage.isEmpty ? "transfer failed" : outcome.curlMessage
        if code == CURLE_OPERATION_TIMEDOUT.rawValue {
            message = "stalled or timed out: \(message)"
        }
        if code == CURLE_PEER_FAILED_VERIFICATION.rawValue {
            message += " (use --cacert PATH to trust a private CA)"
        }
        return FailureVerdict(
            error: SpateError(.network, "\(url.host):\(url.port): \(redactURLs(in: message))"),
            retryable: !permanentCurlCodes.contains(code))
    }

    /// An HTTP status that is not the one asked for.
    static func statusFailure(head: ResponseHead, body: ErrorBody, url: RemoteURL) -> FailureVerdict {
        let status = head.status
        var message = "HTTP \(status)"
        if let reason = reasonPhrase(status) { message += " \(reason)" }
        message += " from \(url.redacted)"
        let detail = redactURLs(in: body.summary())  // an error body may echo a signed URL
        if !detail.isEmpty { message += ": \(detail)" }
        let retryAfter = RetryAfter.parse(head["retry-after"], now: Int64(time(nil)))
        return FailureVerdict(error: SpateError(.http, message, httpStatus: status),
                              retryable: RetryableStatus.contains(status), retryAfter: retryAfter)
    }

    static func rangeFailure(_ outcome: TransferOutcome, sink: RangeSink, url: RemoteURL) -> FailureVerdict {
        if let head = outcome.head, sink.errorStatus != nil {
            return statusFailure(head: head, body: sink.errorBody, url: url)
        }
        if outcome.stop != nil || outcome.curlCode != 0 || outcome.head == nil {
            return transportFailure(outcome, url: url)
        }
        // The server ended the reply early without an error (no Content-Length, connection closed).
        let got = sink.position - sink.requested.start
        return FailureVerdict(
            error: .invalidResponse("the reply for \(sink.remoteRange.httpRangeValue) ended after \(got) of \(sink.requested.count) bytes"),
            retryable: true)
    }

    static func streamFailure(_ outcome: TransferOutcome, sink: StreamSink, url: RemoteURL) -> FailureVerdict {
        if let head = outcome.head, sink.errorStatus != nil {
            return statusFailure(head: head, body: sink.errorBody, url: url)
        }
        if outcome.stop != nil || outcome.curlCode != 0 || outcome.head == nil {
            return transportFailure(outcome, url: url)
        }
        return FailureVerdict(
            error: .invalidResponse("the reply ended after \(sink.position) of \(sink.announcedLength.map(String.init) ?? "?") bytes"),
            retryable: true)
    }

    /// Errors raised by Spate's own checks: only a malformed reply may be a passing fault.
    static func isRetryable(_ error: SpateError) -> Bool {
        error.kind == .invalidResponse || error.kind == .network
    }

    /// libcurl messages can quote the URL; keep its query out of them.
    static func redactURLs(in text: String) -> String {
        text.split(separator: " ", omittingEmptySubsequences: false).map { word in
            word.contains("://") ? Redactor.url(String(word)) : String(word)
        }.joined(separator: " ")
    }

    static func reasonPhrase(_ status: Int) -> String? {
        switch status {
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
