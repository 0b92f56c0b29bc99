namespace Kvq.Cuda.Distributed;

/// <summary>ncclResult_t (nccl.h).</summary>
public enum NcclResult
{
    Success = 0, UnhandledCudaError = 1, SystemError = 2, InternalError = 3, InvalidArgument = 4, InvalidUsage = 5,
    RemoteError = 6, InProgress = 7,
}

/// <summary>An NCCL call failed: the call, NCCL's result and its message (ncclGetErrorString, plus ncclGetLastError's
/// detail when there is one). <see cref="NcclResult.RemoteError"/> and <see cref="NcclResult.SystemError"/> are what a
/// rank sees when another rank died.</summary>
public sealed class NcclException : Exception
{
    public string Call { get; }
    public NcclResult Result { get; }

    public NcclException(string call, NcclResult result, string message) : base($"{call} failed: {result} ({(int)result}): {message}")
    {
        Call = call;
        Result = result;
    }
}
