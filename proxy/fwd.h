#pragma once
// Forward declarations of the proxy's types (as HAProxy's -t.h headers): a header that only
// names a type includes this instead of the type's header, so headers stay light and the include
// graph stays acyclic. Where each type lives:
//   worker.h: Worker, WorkerGen, WorkerRoute, ListenerContext
//   cluster.h: ClusterState, WorkerCluster          upstream.h: UpstreamConnection, EndpointPool
//   route_state.h: RouteState                        metrics.h: RouteStats, ClusterStats
//   exchange.h: Exchange, ExchangePool, ExchangeResources
//   upstream_request.h: UpstreamRequest              http1_connection.h: Http1Connection
//   client_connection.h: ClientConnection            stream.h: ExchangeStream
//   transport.h: Transport                           buffer.h: BufferPool, BufferBlock, InputBuffer
//   outbox.h: Outbox                                 lb.h: FastRandom
//   codec.h: http::MessageHead, http::Parser

namespace bulwark {

class Worker;
struct WorkerGen;
struct WorkerRoute;
struct ListenerContext;
class ClusterState;
class WorkerCluster;
class UpstreamConnection;
class EndpointPool;
class RouteState;
struct RouteStats;
struct ClusterStats;
class Exchange;
class ExchangePool;
struct ExchangeResources;
class UpstreamRequest;
class Http1Connection;
class ClientConnection;
class ExchangeStream;
class Transport;
struct TlsSession;
class BufferPool;
struct BufferBlock;
class InputBuffer;
class Outbox;
class FastRandom;

namespace http {
struct MessageHead;
class Parser;
}  // namespace http

}  // namespace bulwark
