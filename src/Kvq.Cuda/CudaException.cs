namespace Kvq.Cuda;

/// <summary>A CUDA driver call failed: carries the call, the driver's result code, its name and its message.</summary>
public class CudaException : Exception
{
    public string Call { get; }
    public int Code { get; }
    public string ErrorName { get; }

    public CudaException(string call, int code, string errorName, string message)
        : base($"{call} failed: {errorName} ({code}): {message}")
    {
        Call = call;
        Code = code;
        ErrorName = errorName;
    }
}

/// <summary>NVRTC failed to create or compile a program; <see cref="Log"/> holds the compiler's log when there is one.</summary>
public sealed class NvrtcException : Exception
{
    public string Call { get; }
    public int Code { get; }
    public string Log { get; }

    public NvrtcException(string call, int code, string message, string log = "")
        : base(log.Length == 0 ? $"{call} failed: {message} ({code})" : $"{call} failed: {message} ({code})\n{log}")
    {
        Call = call;
        Code = code;
        Log = log;
    }
}

/// <summary>No usable CUDA here: the driver library, NVRTC or a device is missing. <see cref="Reason"/> says which.</summary>
public sealed class CudaUnavailableException : Exception
{
    public string Reason { get; }
    public CudaUnavailableException(string reason, Exception? inner = null) : base("CUDA is not available: " + reason, inner) => Reason = reason;
}
