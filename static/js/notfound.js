// Not-found page: the shell only (banner, signed-in user); there is nothing to load.
import { initShell } from "./api.js";

initShell();
