// optech-bench's JavaScript echo (contenders f and f2): the inputs back as data.
import { handler } from "optech-sdk";

export const handle = handler((req) => Object.fromEntries(req.inputs));
