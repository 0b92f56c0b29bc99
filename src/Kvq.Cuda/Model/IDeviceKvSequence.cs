using Kvq.Cache;

namespace Kvq.Cuda.Model;

/// <summary>A KV sequence that <see cref="CudaTransformer"/> appends to and attends over through device addresses: a
/// <see cref="CudaKvSequence"/>, or a sequence-parallel one (<see cref="Distributed.ShardedKvSequence"/>).</summary>
internal interface IDeviceKvSequence : IKvSequence
{
    /// <summary>Appends n tokens' keys (pre-RoPE) and values, f32 [n][KV dim] on the device.</summary>
    void AppendDevice(int layer, ulong k, ulong v, int n);

    /// <summary>Causal attention of the last n appended tokens: q f32 [n][Q dim] (post-RoPE), output f32 [n][Q dim].</summary>
    void AttendDevice(int layer, ulong q, int n, ulong output);
}
